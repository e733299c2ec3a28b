package scan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"unicode"
)

// Vendor tokens whose format alone is not enough: a Mailgun key is
// "key-" and 32 hex digits, a Datadog key is bare hex, a Heroku key a UUID.
// Each rule here pairs the format with the context that makes it a
// credential (a key name, a Terraform block, a .netrc machine) and with a
// randomness check that drops hashes, zeros and sequences. The rules whose
// format is distinctive (SonarQube, Google OAuth tokens, Mapbox secret
// tokens) need no context.
//
// builtinRules appends these before assigning priorities: each is a
// known token format (prioSpecific), so on a line where the generic rule,
// a config-file rule (netrc-password) or compose-env-secret reports the
// same value, the vendor rule's id is the one reported.

// randomHex accepts a hex secret that looks drawn at random: at least
// minEntropy bits per character, letters and digits both present, and no
// ascending run (0123456789abcdef...).
func randomHex(s string, minEntropy float64) bool {
	if entropy(s) < minEntropy || isPlaceholder(s) || ascendingRun(s) >= 6 {
		return false
	}
	var letters, digits int
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= '0' && c <= '9' {
			digits++
		} else {
			letters++
		}
	}
	return letters > 0 && digits > 0
}

// ascendingRun returns the length of the longest run of consecutive
// characters in 0-9a-z order (case-insensitive): "abcdef", "3456789a".
func ascendingRun(s string) int {
	rank := func(c byte) int {
		switch {
		case c >= '0' && c <= '9':
			return int(c - '0')
		case c >= 'a' && c <= 'z':
			return int(c-'a') + 10
		case c >= 'A' && c <= 'Z':
			return int(c-'A') + 10
		}
		return -10
	}
	best, run := 0, 0
	for i := 0; i < len(s); i++ {
		if i > 0 && rank(s[i]) >= 0 && rank(s[i]) == rank(s[i-1])+1 {
			run++
		} else {
			run = 1
		}
		best = max(best, run)
	}
	return best
}

// tokenPlaceholders mark a token-shaped value that is an instruction
// (1//0REPLACE_WITH_YOUR_REFRESH_TOKEN); unlike the generic stopwords they
// are long enough not to occur by chance in a random token.
var tokenPlaceholders = []string{"your_", "your-", "yourrefresh", "replace", "placeholder", "example", "redacted", "insert_", "xxxx"}

// randomToken accepts a long token (OAuth refresh or access token) with
// at least 4 bits of entropy per character and no placeholder wording.
func randomToken(s string) bool {
	return entropy(s) >= 4.0 && !isPlaceholder(s) && !hasStopword(s, tokenPlaceholders)
}

// hexTail validates the hex after a prefix ("key-", "squ_").
func hexTail(prefixLen int, minEntropy float64) func(string) bool {
	return func(s string) bool { return len(s) > prefixLen && randomHex(s[prefixLen:], minEntropy) }
}

// alibabaSecret accepts a 30-character AccessKey secret: random-looking
// (entropy >= 3.7, which 30 characters drawn from [A-Za-z0-9] reach in
// 99.99% of keys, no ascending run like abcdef) with at least two of upper
// case, lower case and digits.
func alibabaSecret(s string) bool {
	var up, low, dig int
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z':
			up = 1
		case c >= 'a' && c <= 'z':
			low = 1
		case c >= '0' && c <= '9':
			dig = 1
		}
	}
	return up+low+dig >= 2 && entropy(s) >= 3.7 && !isPlaceholder(s) && ascendingRun(s) < 6
}

// validMapboxSecret accepts sk.<base64url JSON with "u">.<signature>.
func validMapboxSecret(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return false
	}
	var body map[string]any
	if json.Unmarshal(b, &body) != nil {
		return false
	}
	_, ok := body["u"]
	return ok
}

// inContext applies a rule's Context check to a match at offset at of
// the line that starts at offset ls of data; rules without one always
// pass. The check sees the match extended to the left over the key name
// it starts inside (DD_ before API_KEY=...), so that regexes can start at
// a literal.
func inContext(r *Rule, path string, data []byte, ls, at int, match string) bool {
	if r.Context == nil {
		return true
	}
	i := ls + at
	j := i
	for j > ls && isKeyNameByte(data[j-1]) {
		j--
	}
	match = string(data[j:i]) + match
	start := ls
	for i := 0; i < r.ContextLines && start > 0; i++ {
		start = bytes.LastIndexByte(data[:start-1], '\n') + 1
	}
	return r.Context(path, data[start:ls], match)
}

func isKeyNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// tfDefaultKeywords are the prefilter keywords of a Terraform variable's
// string default (`default = "`, aligned by terraform fmt, or JSON): "default"
// alone is on every Go switch and costs the regex a pass over each of those
// lines.
func tfDefaultKeywords() []string {
	kw := []string{`"default": "`, `"default":"`}
	for n := 0; n <= 16; n++ {
		kw = append(kw, "default"+strings.Repeat(" ", n)+`= "`)
	}
	return kw
}

var (
	// ddKeyNameRe: a key name that says Datadog by itself (DD_API_KEY,
	// datadog_app_key, the DD-API-KEY and DD-APPLICATION-KEY headers).
	ddKeyNameRe = regexp.MustCompile(`(?i)(?:^|[^a-z0-9])(?:dd|datadog)[_.-]?(?:api|app|application)[_.-]?key`)
	// ddBlockRe: a Terraform block or section of Datadog configuration
	// that a bare api_key/app_key/default line may belong to.
	ddBlockRe = regexp.MustCompile(`(?i)provider\s+"datadog"|variable\s+"[\w-]*(?:datadog|\bdd)[\w-]*(?:api|app)[\w-]*"|(?m:^\s*datadog\s*:)|datadog_(?:api|app)_key`)
	// ddDefaultVarRe: the variable block a `default = "..."` belongs to.
	ddDefaultVarRe = regexp.MustCompile(`(?i)variable\s+"([\w-]+)"`)
	// netrcMachineRe finds the machine entries of a .netrc.
	netrcMachineRe = regexp.MustCompile(`\bmachine\s+(\S+)`)
)

// datadogContext accepts a Datadog key: its name says Datadog, or it is a
// bare api_key/app_key in a file or block about Datadog (datadog.yaml, a
// provider "datadog" block), or the default of a Terraform variable whose
// name says Datadog.
func datadogContext(path string, before []byte, match string) bool {
	if ddKeyNameRe.MatchString(match) {
		return true
	}
	key := strings.ToLower(strings.TrimLeftFunc(match, func(c rune) bool { return !unicode.IsLetter(c) }))
	if strings.HasPrefix(key, "default") {
		vars := ddDefaultVarRe.FindAllSubmatch(before, -1)
		if len(vars) == 0 {
			return false
		}
		name := strings.ToLower(string(vars[len(vars)-1][1]))
		return (strings.Contains(name, "datadog") || strings.HasPrefix(name, "dd_")) &&
			(strings.Contains(name, "api") || strings.Contains(name, "app"))
	}
	return strings.Contains(strings.ToLower(path), "datadog") || ddBlockRe.Match(before)
}

// herokuContext accepts a .netrc password only when the machine entry it
// belongs to (on its line or the last one before it) is Heroku's API or
// git host; other matches of heroku-api-key need no context.
func herokuContext(_ string, before []byte, match string) bool {
	if m := strings.ToLower(match); strings.Contains(m, "heroku") || strings.Contains(m, "hrku-aa") {
		return true // a Heroku key name, a one-line .netrc entry for a Heroku host, or a v2 key
	}
	ms := netrcMachineRe.FindAllSubmatch(before, -1)
	if len(ms) == 0 {
		return false
	}
	host := strings.ToLower(string(ms[len(ms)-1][1]))
	return host == "api.heroku.com" || host == "git.heroku.com"
}

const uuidRe = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`

// vendorRules returns the vendor token rules described at the top of this
// file.
func vendorRules() []*Rule {
	return []*Rule{
		{ID: "sonarqube-token", Description: "SonarQube user, project or global analysis token", Severity: High,
			Keywords: []string{"squ_", "sqp_", "sqa_"},
			Regex:    regexp.MustCompile(`\b(sq[upa]_[0-9a-f]{40})\b`), Groups: []int{1}, Validate: hexTail(4, 3.1)},
		{ID: "datadog-api-key", Description: "Datadog API key (32 hex) under a Datadog key name or in a Datadog block", Severity: High,
			Keywords: append([]string{"api_key", "api-key", "apikey"}, tfDefaultKeywords()...),
			Regex:    regexp.MustCompile(`(?:(?i:api[_-]?key)|default)(?:\\?["'])?\]?\s*(?::=|=>|=|:)\s*(?:\\?["'])?([0-9a-f]{32})(?:[^\w-]|$)`),
			Groups:   []int{1}, Validate: func(s string) bool { return randomHex(s, 3.0) }, Context: datadogContext, ContextLines: 8},
		{ID: "datadog-app-key", Description: "Datadog application key (40 hex) under a Datadog key name or in a Datadog block", Severity: High,
			Keywords: append([]string{"app_key", "app-key", "appkey", "application_key", "application-key", "applicationkey"}, tfDefaultKeywords()...),
			Regex:    regexp.MustCompile(`(?:(?i:app(?:lication)?[_-]?key)|default)(?:\\?["'])?\]?\s*(?::=|=>|=|:)\s*(?:\\?["'])?([0-9a-f]{40})(?:[^\w-]|$)`),
			Groups:   []int{1}, Validate: func(s string) bool { return randomHex(s, 3.1) }, Context: datadogContext, ContextLines: 8},
		{ID: "gcp-oauth-refresh-token", Description: "Google OAuth refresh token (1//...: rclone, gcloud and google-auth token files)", Severity: Critical,
			Keywords: []string{"1//"}, Regex: regexp.MustCompile(`(?:^|[^\w/])(1//[0-9A-Za-z_-]{40,300})(?:[^0-9A-Za-z_-]|$)`), Groups: []int{1},
			Validate: randomToken},
		{ID: "gcp-oauth-access-token", Description: "Google OAuth access token (ya29., valid for an hour)", Severity: Medium,
			Keywords: []string{"ya29."}, Regex: regexp.MustCompile(`\b(ya29\.[0-9A-Za-z_-]{40,1000})`), Groups: []int{1}, Validate: randomToken},
		{ID: "mapbox-secret-token", Description: "Mapbox secret access token (sk.; pk. tokens are public by design)", Severity: High,
			Keywords: []string{"sk.eyj"}, Regex: regexp.MustCompile(`\bsk\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}`), Validate: validMapboxSecret},
	}
}
