package scan

import (
	"bytes"
	"encoding/base64"
	"math"
	"regexp"
	"strings"

	"github.com/cofferkms/coffer/internal/sealedfile"
)

// entropy returns the Shannon entropy of s in bits per byte.
func entropy(s string) float64 {
	if s == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	n := float64(len(s))
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// defaultStopwords are substrings (lower case) that mark a value as a
// placeholder, an example or a reference rather than a secret.
var defaultStopwords = []string{
	"example", "sample", "changeme", "change_me", "change-me", "placeholder", "dummy", "fake", "redacted",
	"xxxx", "****", "....", "your_", "your-", "yourpass", "<", ">", "${", "{{", "$(", "%s", "%(", "%v",
	"process.env", "os.environ", "getenv", "env(", "secretkeyref", "notasecret", "not-a-secret", "insert", "replace",
	"lorem", "foobar", "todo", "test", "mock", "null", "undefined", "none", "password", "secret", "s3cr3t",
	"123456", "abcdef", "qwerty", "letmein", "hunter2", "abc123", "abc-123",
}

// isPlaceholder reports whether a value is an obvious stand-in: an
// example, a template, a variable reference, a sealed value, or a long run
// of one character.
func isPlaceholder(v string) bool {
	if v == "" || sealedfile.IsSealedValue(v) {
		return true
	}
	lower := strings.ToLower(v)
	if strings.Contains(lower, "example") || strings.Contains(v, "{{") || strings.Contains(v, "${") || publicByDesign(v) {
		return true
	}
	run := 1
	for i := 1; i < len(v); i++ {
		if v[i] == v[i-1] {
			run++
			if run >= 6 {
				return true
			}
		} else {
			run = 1
		}
	}
	return false
}

// publicByDesign reports whether a value is a key its vendor publishes to
// browsers and apps: a Mapbox public token (pk.eyJ...; the secret ones are
// sk.), a Stripe publishable key (pk_live_, pk_test_) or a Datadog RUM
// client token (pub and 32 hex). Such values sit under names like
// MAPBOX_ACCESS_TOKEN or DD_CLIENT_TOKEN and are never findings.
func publicByDesign(v string) bool {
	if strings.HasPrefix(v, "pk.eyJ") || strings.HasPrefix(v, "pk_live_") || strings.HasPrefix(v, "pk_test_") {
		return true
	}
	if len(v) == 35 && strings.HasPrefix(v, "pub") {
		for i := 3; i < len(v); i++ {
			if c := v[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
		return true
	}
	return false
}

// hasStopword reports whether the lower-cased value contains a stopword.
func hasStopword(v string, stop []string) bool {
	lower := strings.ToLower(v)
	for _, w := range stop {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// goSelectorRe matches a qualified Go name (modadvapi32.NewProc,
// http.StatusOK, ed25519.Ed25519PrivateKey, datadogV1.SOME_CONSTANT,
// listOut.NextContinuationToken):
// code, when the generic rule's unquoted value stops at a call's
// parenthesis or is a field.
var goSelectorRe = regexp.MustCompile(`^[a-z][A-Za-z0-9]*(?:\.(?:[A-Z][a-z]+[A-Za-z0-9]*|[A-Z][A-Z0-9_]{3,}))+$`)

// encodedProse reports whether v is base64 of a sentence (words and
// spaces: "this is not a real value"), the stand-in of SDK tests.
func encodedProse(v string) bool {
	if len(v) < 12 || len(v)%4 != 0 {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || !bytes.ContainsRune(b, ' ') {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == ' ' || c == '.' || c == ',' || c == '\'' || c == '-') {
			return false
		}
	}
	return true
}

// secretShaped reports whether a value assigned to a secret-looking key
// looks like a secret rather than code: not an identifier or dotted path,
// not a call, an address (&x) or a dereference (*x), not a path or a
// number, and with a digit or symbol (a space is not one: words separated
// by spaces are prose).
func secretShaped(v string) bool {
	if len(v) < 8 {
		return false
	}
	if strings.HasPrefix(v, "$") || strings.HasPrefix(v, "/") || strings.HasPrefix(v, "./") || strings.HasPrefix(v, "../") || strings.HasPrefix(v, "@") {
		return false
	}
	// Go and C code: an address or a dereference (&pkg.Type{, *cfg.Token).
	if (v[0] == '&' || v[0] == '*') && len(v) > 1 && (v[1] >= 'a' && v[1] <= 'z' || v[1] >= 'A' && v[1] <= 'Z') {
		return false
	}
	if goSelectorRe.MatchString(v) || strings.Count(v, `\x`) >= 2 { // code, or escaped binary (protobuf descriptors)
		return false
	}
	if encodedProse(v) {
		return false
	}
	var letters, digits, other int
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			letters++
		case c >= '0' && c <= '9':
			digits++
		case c == '_' || c == '.' || c == '-':
		case c == ' ':
		default:
			other++
		}
	}
	if letters == 0 {
		return false // a number, a date, a version
	}
	// Words and spaces alone are prose ("refresh token"), not a secret.
	return digits > 0 || other > 0
}

// secretKeyName reports whether a key name (an env var, a ConfigMap key,
// a Helm value) says its value is a secret.
func secretKeyName(k string) bool {
	return secretKeyRe.MatchString(k) && !notSecretKeyRe.MatchString(k)
}

// notSecretWords are key-name words that say a value names, locates or
// describes a secret rather than holding it: DB_PASSWORD_FILE,
// secretKeyRef, token_ttl, PASSWORD_HASH_ALGORITHM.
var notSecretWords = map[string]bool{
	"name": true, "names": true, "ref": true, "refs": true, "file": true, "files": true, "filename": true,
	"filepath": true, "path": true, "paths": true, "pathname": true, "url": true, "urls": true, "uri": true,
	"uris": true, "endpoint": true, "type": true, "length": true, "len": true, "policy": true, "header": true,
	"field": true, "format": true, "prefix": true, "count": true, "ttl": true, "timeout": true, "mode": true,
	"existing": true, "enabled": true, "required": true, "provider": true, "version": true, "size": true,
	"hash": true, "hashed": true, "source": true, "page": true, "continuation": true, "pagination": true, "cursor": true, "digest": true, "algorithm": true, "method": true, "keyid": true, "mount": true, "selector": true,
}

// notSecretWord reports whether w, or its singular, is a not-secret word
// (hashes, names, policies).
func notSecretWord(w string) bool {
	return notSecretWords[w] || notSecretWords[strings.TrimSuffix(w, "s")] || notSecretWords[strings.TrimSuffix(w, "es")] ||
		w == "policies"
}

// keyNameFilter matches key names whose values name or point at a secret
// rather than hold one. It compares whole words of the name (split at
// _ . - and other punctuation and at camelCase humps), never substrings:
// SECURITY holds "uri", ACCOUNT "count", REFRESH "ref", MODEL "mode" and
// PROTOTYPE "type", and GF_SECURITY_ADMIN_PASSWORD, REFRESH_TOKEN or
// SERVICE_ACCOUNT_TOKEN hold secrets. A word of several run together
// (passwordfile, tokenurl, pwdlen) counts when it ends with a listed word
// after a secret word. "id" and "namespace" count as the last word only (ID_TOKEN
// is a token; ACCESS_KEY_ID and cache_secret_namespace are not secrets), and words starting with "expir"
// (expiry, expires, expiration) count anywhere.
type keyNameFilter struct{}

// MatchString reports whether the key name k says its value is not a secret.
func (keyNameFilter) MatchString(k string) bool {
	words := keyWords(k)
	if len(words) == 2 && words[0] == "next" { // NextToken, next_token: a pagination cursor
		return true
	}
	for i, w := range words {
		if notSecretWord(w) || strings.HasPrefix(w, "expir") {
			return true
		}
		last := i == len(words)-1
		if last && (w == "id" || w == "namespace" || (strings.HasSuffix(w, "id") && secretKeyRe.MatchString(w[:len(w)-2]))) {
			return true
		}
		for nw := range notSecretWords {
			if len(w) > len(nw) && strings.HasSuffix(w, nw) && secretKeyRe.MatchString(w[:len(w)-len(nw)]) {
				return true
			}
		}
	}
	return false
}

// keyWords splits a key name into lower-case words at non-alphanumeric
// characters and camelCase humps (dbPasswordFile, URLPath, KeyID).
func keyWords(k string) []string {
	var words []string
	start := -1
	isUpper := func(c byte) bool { return c >= 'A' && c <= 'Z' }
	isLower := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for i := 0; i <= len(k); i++ {
		if i == len(k) || !(isUpper(k[i]) || isLower(k[i])) {
			if start >= 0 {
				words = append(words, strings.ToLower(k[start:i]))
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
			continue
		}
		// A hump: aB, or the last capital of a run before a lower-case
		// letter (URLPath: URL|Path).
		if isUpper(k[i]) && (isLower(k[i-1]) || i+1 < len(k) && isUpper(k[i-1]) && k[i+1] >= 'a' && k[i+1] <= 'z') {
			words = append(words, strings.ToLower(k[start:i]))
			start = i
		}
	}
	return words
}
