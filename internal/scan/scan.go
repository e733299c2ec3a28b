// Package scan finds hard-coded secrets in files, Kubernetes manifests,
// Helm charts, standard input and git history.
//
// A Scanner holds a table of rules (rules.go). Text is scanned line by
// line, but a line reaches a rule's regular expression only when an
// Aho-Corasick automaton over all rules' keywords has found one of that
// rule's keywords in it, so most lines of most files cost one pass of the
// automaton. Matches then pass the rule's validator (Coffer credentials are
// checked by their CRC-32, JWT headers are decoded, PEM headers need a body)
// and, for heuristic rules, entropy, stopword and shape filters.
//
// YAML and JSON files are also read as documents (kube.go): Kubernetes
// Secrets (data decoded from base64 and rescanned), ConfigMaps, literal
// env values in workloads and Helm values files. Values sealed by `coffer
// seal` (ENC[coffer:...]) and a sealed file's metadata are never findings.
//
// Findings carry the plaintext secret only in memory; reports redact it
// unless asked not to, and fingerprints (baseline.go) are hashes of rule,
// path and secret, so a baseline holds no plaintext and no line numbers.
//
// Entry points: Scanner.ScanPaths (walk.go), Scanner.ScanReader (stream.go)
// and Scanner.ScanGit (git.go).
package scan

import (
	"bytes"
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/coregx/ahocorasick"
)

// Defaults of Options.
const (
	DefaultMaxFileSize = 10 << 20
	DefaultMaxLineLen  = 1 << 20
)

// Options configure a Scanner.
type Options struct {
	// MaxFileSize: larger files are skipped and counted (0: default).
	MaxFileSize int64
	// MaxLineLen: in streams (stdin, git history) longer lines are cut to
	// this length and counted (0: default).
	MaxLineLen int
	// Workers scanning in parallel (0: GOMAXPROCS).
	Workers int
	// NoIgnore disables .gitignore handling.
	NoIgnore bool
	// Config adds rules and allowlists; nil for none.
	Config *Config
	// Baseline suppresses known findings; nil for none.
	Baseline *Baseline
}

// Finding is one secret found.
type Finding struct {
	RuleID      string   `json:"rule"`
	Description string   `json:"description"`
	Severity    Severity `json:"severity"`
	Path        string   `json:"path"`
	Line        int      `json:"line"`
	Column      int      `json:"column,omitempty"`
	// Where adds detail for structured checks ("Secret prod/db data.password").
	Where  string `json:"where,omitempty"`
	Commit string `json:"commit,omitempty"`
	Author string `json:"author,omitempty"`
	Date   string `json:"date,omitempty"`
	// Fingerprint is hex(SHA-256(rule, path, secret)); see Fingerprint.
	Fingerprint string `json:"fingerprint"`
	// Secret is the plaintext; it is never marshalled. Reports show
	// Redacted(Secret) unless the user opts out.
	Secret string `json:"-"`

	priority int
	start    int // byte offset of the secret in its line, for de-duplication
}

// Scanner scans text with a fixed set of rules. It is safe for concurrent use.
type Scanner struct {
	opts      Options
	rules     []*Rule
	byID      map[string]*Rule
	lineRules []*Rule // rules with a Regex, indexed by ruleIdx below
	ac        *ahocorasick.Automaton
	kwRules   [][]int // pattern id -> indexes into lineRules
	pathRules []*Rule
	stopwords []string
	allowRe   []*regexp.Regexp
	allowPath []*regexp.Regexp
	bufPool   sync.Pool
}

// New returns a Scanner with the built-in rules plus those of opts.Config.
func New(opts Options) (*Scanner, error) {
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.MaxLineLen <= 0 {
		opts.MaxLineLen = DefaultMaxLineLen
	}
	s := &Scanner{opts: opts, byID: map[string]*Rule{}, stopwords: defaultStopwords}
	rules := builtinRules()
	if c := opts.Config; c != nil {
		custom, err := c.compile()
		if err != nil {
			return nil, err
		}
		rules = append(rules, custom...)
		disabled := map[string]bool{}
		for _, id := range c.Disable {
			disabled[id] = true
		}
		rules = slices.DeleteFunc(rules, func(r *Rule) bool { return disabled[r.ID] })
		s.stopwords = append(slices.Clone(s.stopwords), lowerAll(c.Allowlist.Stopwords)...)
		for _, p := range c.Allowlist.Regexes {
			re, err := regexp.Compile(p)
			if err != nil {
				return nil, fmt.Errorf("config: allowlist regex %q: %v", p, err)
			}
			s.allowRe = append(s.allowRe, re)
		}
		for _, p := range c.Allowlist.Paths {
			re, err := regexp.Compile(p)
			if err != nil {
				return nil, fmt.Errorf("config: allowlist path %q: %v", p, err)
			}
			s.allowPath = append(s.allowPath, re)
		}
	}
	s.rules = rules
	kwIndex := map[string]int{}
	var patterns []string
	for _, r := range rules {
		if _, dup := s.byID[r.ID]; dup {
			return nil, fmt.Errorf("duplicate rule id %q", r.ID)
		}
		s.byID[r.ID] = r
		if r.Path != nil {
			s.pathRules = append(s.pathRules, r)
		}
		if r.Regex == nil {
			continue
		}
		idx := len(s.lineRules)
		s.lineRules = append(s.lineRules, r)
		for _, kw := range r.Keywords {
			kw = strings.ToLower(kw)
			id, ok := kwIndex[kw]
			if !ok {
				id = len(patterns)
				kwIndex[kw] = id
				patterns = append(patterns, kw)
				s.kwRules = append(s.kwRules, nil)
			}
			s.kwRules[id] = append(s.kwRules[id], idx)
		}
	}
	ac, err := ahocorasick.NewBuilder().AddStrings(patterns).Build()
	if err != nil {
		return nil, fmt.Errorf("keyword automaton: %v", err)
	}
	s.ac = ac
	return s, nil
}

// Rules returns the scanner's rules, in table order.
func (s *Scanner) Rules() []*Rule { return s.rules }

// Rule returns the rule with the given id, or nil.
func (s *Scanner) Rule(id string) *Rule { return s.byID[id] }

func lowerAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, w := range ss {
		out[i] = strings.ToLower(w)
	}
	return out
}

// pathAllowed reports whether the config's path allowlist excludes path.
func (s *Scanner) pathAllowed(path string) bool {
	for _, re := range s.allowPath {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

// scanResult is what scanning one piece of text yields.
type scanResult struct {
	findings   []Finding
	suppressed int // by coffer:allow comments
	yamlErrors int // documents that did not parse
}

// scanText finds secrets in data, the content (or an excerpt, with
// structured=false) of the file at path. Line numbers start at 1.
func (s *Scanner) scanText(path string, data []byte, structured bool) scanResult {
	res := scanResult{findings: s.pathFindings(path)}
	s.scanLines(path, data, &res)
	if structured && looksStructured(path, data) {
		s.scanYAML(path, data, &res)
	}
	res.findings = s.finish(path, res.findings)
	return res
}

// scanLines runs the line rules over data.
func (s *Scanner) scanLines(path string, data []byte, res *scanResult) {
	bp, _ := s.bufPool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	lower := asciiLower((*bp)[:0], data)
	matches := s.ac.FindAllOverlapping(lower)
	*bp = lower
	s.bufPool.Put(bp)
	if len(matches) == 0 {
		return
	}
	slices.SortFunc(matches, func(a, b ahocorasick.Match) int { return cmp.Compare(a.Start, b.Start) })

	seen := make([]int, len(s.lineRules)) // line start+1 at which the rule was queued
	var cand []int
	lineNo, counted := 1, 0
	curStart := -1
	var near []Finding
	flush := func(ls int) {
		le := bytes.IndexByte(data[ls:], '\n')
		if le < 0 {
			le = len(data)
		} else {
			le += ls
		}
		line := data[ls:le]
		allowed := bytes.Contains(line, []byte("coffer:allow"))
		for _, ri := range cand {
			r := s.lineRules[ri]
			for _, m := range r.Regex.FindAllSubmatchIndex(line, -1) {
				a, b := m[0], m[1]
				for _, g := range r.Groups {
					if 2*g+1 < len(m) && m[2*g] >= 0 && m[2*g+1] > m[2*g] {
						a, b = m[2*g], m[2*g+1]
						break
					}
				}
				secret := string(line[a:b])
				if r.FollowLines > 0 {
					secret = followLines(data, ls+b, secret, r.FollowLines)
				}
				if !s.accept(r, secret, string(line[m[0]:m[1]])) || !inContext(r, path, data, ls, m[0], string(line[m[0]:m[1]])) {
					continue
				}
				if allowed {
					res.suppressed++
					continue
				}
				f := Finding{RuleID: r.ID, Line: lineNo, Column: a + 1, Secret: secret, priority: r.priority, start: a}
				if r.Near != "" {
					near = append(near, f)
					continue
				}
				res.findings = append(res.findings, f)
			}
		}
		cand = cand[:0]
	}
	// A minified file is one long line with thousands of keyword hits:
	// the line of a hit is looked up only when the hit is past the end of
	// the current one, so that finding it costs one pass over the data,
	// not one pass back over the line per hit.
	curEnd := -1
	for _, m := range matches {
		if m.Start > curEnd {
			ls := bytes.LastIndexByte(data[:m.Start], '\n') + 1
			if curStart >= 0 {
				flush(curStart)
			}
			lineNo += bytes.Count(data[counted:ls], []byte{'\n'})
			counted = ls
			curStart = ls
			if curEnd = bytes.IndexByte(data[m.Start:], '\n'); curEnd < 0 {
				curEnd = len(data)
			} else {
				curEnd += m.Start
			}
		}
		for _, ri := range s.kwRules[m.PatternID] {
			if seen[ri] != curStart+1 {
				seen[ri] = curStart + 1
				cand = append(cand, ri)
			}
		}
	}
	flush(curStart)

	// A rule with Near counts only next to a finding of the named rule.
	for _, f := range near {
		r := s.byID[f.RuleID]
		for _, g := range res.findings {
			if g.RuleID == r.Near && abs(g.Line-f.Line) <= r.NearLines {
				res.findings = append(res.findings, f)
				break
			}
		}
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// followLines appends up to n lines that follow offset end in data to secret.
func followLines(data []byte, end int, secret string, n int) string {
	var b strings.Builder
	b.WriteString(secret)
	rest := data[end:]
	for i := 0; i <= n && len(rest) > 0; i++ {
		j := bytes.IndexByte(rest, '\n')
		var l []byte
		if j < 0 {
			l, rest = rest, nil
		} else {
			l, rest = rest[:j], rest[j+1:]
		}
		if i == 0 && len(bytes.TrimSpace(l)) == 0 {
			b.WriteByte('\n')
			continue
		}
		if len(l) > 256 {
			l = l[:256]
		}
		b.Write(l)
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

// accept applies a rule's validator and filters, and the allowlists.
func (s *Scanner) accept(r *Rule, secret, match string) bool {
	if r.Validate != nil && !r.Validate(secret) {
		return false
	}
	if r.Exclude != nil && r.Exclude.MatchString(match) {
		return false
	}
	if r.MinEntropy > 0 && entropy(secret) < r.MinEntropy {
		return false
	}
	if isPlaceholder(placeholderView(r, secret)) {
		return false
	}
	if r.Generic {
		if hasStopword(secret, s.stopwords) {
			return false
		}
		if r.ID == "generic-secret-assignment" {
			key := match
			if i := strings.IndexAny(key, ":="); i >= 0 {
				key = key[:i]
			}
			key = strings.Trim(key, "\"' \t")
			if notSecretKeyRe.MatchString(key) || !secretShaped(secret) {
				return false
			}
		}
	}
	for _, re := range s.allowRe {
		if re.MatchString(secret) {
			return false
		}
	}
	return true
}

// finish removes duplicate findings (the same secret on the same line
// found by several rules: the most specific wins) and sets rule metadata
// and fingerprints.
func (s *Scanner) finish(path string, fs []Finding) []Finding {
	if len(fs) == 0 {
		return nil
	}
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.priority, b.priority))
	})
	out := fs[:0]
	for _, f := range fs {
		dup := false
		for i := len(out) - 1; i >= 0 && out[i].Line == f.Line; i-- {
			// A heuristic adds nothing on a line a precise check reported.
			if f.priority == prioGeneric && out[i].priority < prioGeneric {
				dup = true
				break
			}
			if strings.Contains(out[i].Secret, f.Secret) || strings.Contains(f.Secret, out[i].Secret) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		r := s.byID[f.RuleID]
		f.Description, f.Severity = r.Description, r.Severity
		f.Path = path
		f.Fingerprint = Fingerprint(f.RuleID, path, f.Secret)
		out = append(out, f)
	}
	return out
}

// asciiLower appends the ASCII lower case of src to dst.
func asciiLower(dst, src []byte) []byte {
	dst = slices.Grow(dst[:0], len(src))[:len(src)]
	for i, c := range src {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst[i] = c
	}
	return dst
}

// Redacted returns s with all but a short prefix masked.
func Redacted(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	keep := min(4, len(s)/4)
	return s[:keep] + strings.Repeat("*", min(len(s)-keep, 12))
}
