package scan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"

	"sigs.k8s.io/yaml"
)

// Fingerprint identifies a finding across edits: the SHA-256 of the rule
// id, the slash-separated path and the secret, with no line number, so
// moving code keeps it and a baseline holds no plaintext.
func Fingerprint(rule, path, secret string) string {
	h := sha256.New()
	for _, s := range []string{rule, path, secret} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Baseline is a set of accepted fingerprints (coffer scan --write-baseline).
type Baseline struct {
	Version      int      `json:"version"`
	Fingerprints []string `json:"fingerprints"`
	set          map[string]bool
}

// Has reports whether fp is in the baseline; a nil baseline has nothing.
func (b *Baseline) Has(fp string) bool { return b != nil && b.set[fp] }

// NewBaseline returns the baseline of the given findings.
func NewBaseline(fs []Finding) *Baseline {
	b := &Baseline{Version: 1, set: map[string]bool{}}
	for _, f := range fs {
		if !b.set[f.Fingerprint] {
			b.set[f.Fingerprint] = true
			b.Fingerprints = append(b.Fingerprints, f.Fingerprint)
		}
	}
	slices.Sort(b.Fingerprints)
	return b
}

var fingerprintRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ReadBaseline reads a baseline file.
func ReadBaseline(path string) (*Baseline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("baseline: %v", err)
	}
	var b Baseline
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("baseline %s: %v", path, err)
	}
	if b.Version != 1 {
		return nil, fmt.Errorf("baseline %s: unsupported version %d", path, b.Version)
	}
	b.set = map[string]bool{}
	for _, fp := range b.Fingerprints {
		if !fingerprintRe.MatchString(fp) {
			return nil, fmt.Errorf("baseline %s: malformed fingerprint %q", path, fp)
		}
		b.set[fp] = true
	}
	return &b, nil
}

// Write writes the baseline as JSON.
func (b *Baseline) Write(path string) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Config is the scanner's configuration file (YAML or JSON):
//
//	rules:                 # custom rules
//	  - id: acme-token
//	    description: ACME API token
//	    severity: high
//	    regex: 'acme_[a-z0-9]{32}'
//	    keywords: [acme_]    # at least one; lines without them are skipped
//	    secretGroup: 0       # submatch holding the secret (0: whole match)
//	    entropy: 3.0         # optional minimum bits per byte
//	disable: [generic-secret-assignment]
//	allowlist:
//	  paths: ['^vendor/']    # regexes over slash-separated paths
//	  regexes: ['^sk_live_ourdemo']  # regexes over the secret
//	  stopwords: [notreal]   # substrings that make a value a placeholder
type Config struct {
	Rules []struct {
		ID          string   `json:"id"`
		Description string   `json:"description"`
		Severity    Severity `json:"severity"`
		Regex       string   `json:"regex"`
		Keywords    []string `json:"keywords"`
		SecretGroup int      `json:"secretGroup"`
		Entropy     float64  `json:"entropy"`
	} `json:"rules"`
	Disable   []string `json:"disable"`
	Allowlist struct {
		Paths     []string `json:"paths"`
		Regexes   []string `json:"regexes"`
		Stopwords []string `json:"stopwords"`
	} `json:"allowlist"`
}

// ReadConfig reads a config file; unknown fields are errors.
func ReadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %v", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("config %s: %v", path, err)
	}
	return &c, nil
}

func (c *Config) compile() ([]*Rule, error) {
	var out []*Rule
	for _, cr := range c.Rules {
		if cr.ID == "" || cr.Regex == "" || len(cr.Keywords) == 0 {
			return nil, fmt.Errorf("config: rule %q needs id, regex and keywords", cr.ID)
		}
		re, err := regexp.Compile(cr.Regex)
		if err != nil {
			return nil, fmt.Errorf("config: rule %s: %v", cr.ID, err)
		}
		if cr.SecretGroup < 0 || cr.SecretGroup > re.NumSubexp() {
			return nil, fmt.Errorf("config: rule %s: secretGroup %d out of range", cr.ID, cr.SecretGroup)
		}
		sev := cr.Severity
		switch sev {
		case "":
			sev = High
		case Critical, High, Medium, Low:
		default:
			return nil, fmt.Errorf("config: rule %s: severity %q (use critical, high, medium or low)", cr.ID, sev)
		}
		desc := cr.Description
		if desc == "" {
			desc = "custom rule " + cr.ID
		}
		r := &Rule{ID: cr.ID, Description: desc, Severity: sev, Keywords: cr.Keywords, Regex: re, MinEntropy: cr.Entropy, priority: prioSpecific}
		if cr.SecretGroup > 0 {
			r.Groups = []int{cr.SecretGroup}
		}
		out = append(out, r)
	}
	return out, nil
}
