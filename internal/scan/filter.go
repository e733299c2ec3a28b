package scan

import (
	"math"
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
	"123456", "abcdef", "qwerty", "letmein", "hunter2",
}

// isPlaceholder reports whether a value is an obvious stand-in: an
// example, a template, a variable reference, a sealed value, or a long run
// of one character.
func isPlaceholder(v string) bool {
	if v == "" || sealedfile.IsSealedValue(v) {
		return true
	}
	lower := strings.ToLower(v)
	if strings.Contains(lower, "example") || strings.Contains(v, "{{") || strings.Contains(v, "${") {
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

// secretShaped reports whether a value assigned to a secret-looking key
// looks like a secret rather than code: not an identifier or dotted path,
// not a call, not a path or a number, and with a digit or symbol.
func secretShaped(v string) bool {
	if len(v) < 8 {
		return false
	}
	if strings.HasPrefix(v, "$") || strings.HasPrefix(v, "/") || strings.HasPrefix(v, "./") || strings.HasPrefix(v, "@") {
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
		default:
			other++
		}
	}
	if letters == 0 {
		return false // a number, a date, a version
	}
	return digits > 0 || other > 0
}

// secretKeyName reports whether a key name (an env var, a ConfigMap key,
// a Helm value) says its value is a secret.
func secretKeyName(k string) bool {
	return secretKeyRe.MatchString(k) && !notSecretKeyRe.MatchString(k)
}
