package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestParseGood parses every committed good policy.
func TestParseGood(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) == 0 {
		t.Fatal("no good policies")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(filepath.Base(f), data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(p.Statements) == 0 {
			t.Errorf("%s: no statements", f)
		}
	}
}

// TestParseBad checks that every committed bad policy is rejected with an
// error on the line its first comment names ("# error: LINE: TEXT").
func TestParseBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d bad policies", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			spec, ok := strings.CutPrefix(first, "# error: ")
			if !ok {
				t.Fatal("first line must be # error: LINE: TEXT")
			}
			lineS, want, _ := strings.Cut(spec, ": ")
			line, _ := strconv.Atoi(lineS)
			_, err = Parse(filepath.Base(f), data)
			if err == nil {
				t.Fatal("accepted")
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *policy.Error", err)
			}
			if pe.Line != line {
				t.Errorf("line %d, want %d: %v", pe.Line, line, err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			if !strings.HasPrefix(err.Error(), filepath.Base(f)+":"+lineS+":") {
				t.Errorf("error %q does not start with NAME:LINE:", err)
			}
		})
	}
}

func TestParseCollectsSeveralErrors(t *testing.T) {
	_, err := Parse("p.yaml", []byte(`statements:
  - effect: allow
    actions: [kms:Nope]
    resources: ["alias/**"]
`))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	if !strings.Contains(msg, "p.yaml:3:15: ") || !strings.Contains(msg, "p.yaml:4:17: ") {
		t.Errorf("want errors on lines 3 and 4, got:\n%s", msg)
	}
}

func TestParseLimitsAndShapes(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":           "",
		"comment only":    "# nothing\n",
		"scalar":          "hello\n",
		"list":            "- a\n- b\n",
		"two documents":   "statements: [{effect: allow, actions: kms:Encrypt, resources: '*'}]\n---\nstatements: []\n",
		"alias":           "x: &a kms:Encrypt\nstatements: [{effect: allow, actions: *a, resources: '*'}]\n",
		"empty list":      "statements: []\n",
		"null action":     "statements: [{effect: allow, actions: ~, resources: '*'}]\n",
		"empty actions":   "statements: [{effect: allow, actions: [], resources: '*'}]\n",
		"nested list":     "statements: [{effect: allow, actions: [[kms:Encrypt]], resources: '*'}]\n",
		"empty conds":     "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {}}]\n",
		"two times":       "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {DateLessThan: {time: [2026-01-01T00:00:00Z, 2027-01-01T00:00:00Z]}}}]\n",
		"bad context":     "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {StringEquals: {context.: x}}}]\n",
		"bad string key":  "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {StringEquals: {namespace: x}}}]\n",
		"bad day":         "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {TimeOfDay: {between: '08:00-09:00', days: [Someday]}}}]\n",
		"no window":       "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {TimeOfDay: {zone: UTC}}}]\n",
		"bad zone":        "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {TimeOfDay: {between: '08:00-09:00', zone: Mars/Olympus}}}]\n",
		"dollar":          "statements: [{effect: allow, actions: kms:Encrypt, resources: '*', conditions: {StringEquals: {context.a: 'a$b'}}}]\n",
		"template action": "statements: [{effect: allow, actions: 'kms:${principal.id}', resources: '*'}]\n",
		"bad sid":         "statements: [{sid: 'has space', effect: allow, actions: kms:Encrypt, resources: '*'}]\n",
	} {
		if _, err := Parse("p.yaml", []byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	big := "statements:\n" + strings.Repeat("  - {effect: allow, actions: kms:Encrypt, resources: '*'}\n", MaxStatements+1)
	if _, err := Parse("p.yaml", []byte(big)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("too many statements: %v", err)
	}
	huge := make([]byte, MaxDocumentSize+1)
	if _, err := Parse("p.yaml", huge); err == nil {
		t.Error("huge document accepted")
	}
}

// TestParseKeepsStringsAsWritten: YAML 1.1 booleans and numbers stay text.
func TestParseKeepsStringsAsWritten(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`statements:
  - effect: allow
    actions: kms:Decrypt
    resources: alias/app
    conditions:
      StringEquals:
        context.enabled: yes
        context.port: 0800
`))
	if err != nil {
		t.Fatal(err)
	}
	d := Evaluate([]*Policy{p}, Request{Action: "kms:Decrypt", Resource: "alias/app",
		Context: map[string]string{"enabled": "yes", "port": "0800"}})
	if !d.Allowed {
		t.Fatal(d)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *policy.Error", err)
			}
			return
		}
		// A parsed policy evaluates and lints without panicking.
		_ = LintAt(p, fixedNow)
		req := Request{Action: "kms:Decrypt", Resource: "alias/app", Context: map[string]string{"a": "b"},
			Principal: Principal{Kind: "role", ID: "x", Role: "r", Namespace: "ns"}, Time: fixedNow}
		_ = NewSet(p).Evaluate(req)
	})
}
