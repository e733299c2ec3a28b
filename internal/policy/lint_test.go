package policy

import (
	"slices"
	"strings"
	"testing"
)

func codes(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Code+"@"+itoa(w.Statement))
	}
	slices.Sort(out)
	return out
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"clean", `statements:
  - effect: allow
    actions: kms:Decrypt
    resources: alias/app
    conditions: {StringEquals: {context.app: web}}`, nil},
		{"wildcards and unconditioned decrypt", `statements:
  - effect: allow
    actions: "kms:*"
    resources: "*"`, []string{"unconditioned-read@1", "wildcard-action@1", "wildcard-resource@1"}},
		{"deny wildcards are fine", `statements:
  - effect: deny
    actions: "*"
    resources: "*"`, nil},
		{"shadowed by deny", `statements:
  - effect: allow
    actions: key:Rotate
    resources: alias/app-web
  - effect: deny
    actions: "key:*"
    resources: alias/app-*`, []string{"shadowed@1"}},
		{"conditional deny does not shadow", `statements:
  - effect: allow
    actions: key:Rotate
    resources: alias/app-web
  - effect: deny
    actions: "key:*"
    resources: alias/app-*
    conditions: {NotIpAddress: {source_ip: 10.0.0.0/8}}`, nil},
		{"redundant allow", `statements:
  - effect: allow
    actions: [key:Rotate, key:Describe]
    resources: alias/*
  - effect: allow
    actions: key:Rotate
    resources: alias/app`, []string{"redundant@2"}},
		{"never matches: resource kind", `statements:
  - effect: allow
    actions: sys:Seal
    resources: alias/app`, []string{"never-matches@1"}},
		{"never matches: secret action on key", `statements:
  - effect: allow
    actions: secret:Write
    resources: 3f1c2a9e-0d4b-4c8e-9a51-7b2d6e8f0a13`, []string{"never-matches@1"}},
		{"unused action", `statements:
  - effect: allow
    actions: [key:Rotate, key:List]
    resources: alias/app`, []string{"unused-action@1"}},
		{"context condition on contextless action", `statements:
  - effect: allow
    actions: key:Rotate
    resources: alias/app
    conditions: {StringEquals: {context.app: web}}`, []string{"never-matches@1"}},
		{"access key updates itself", `statements:
  - effect: allow
    actions: [accesskey:Update, accesskey:Read]
    resources: ["${principal.id}"]`, []string{"grants-policies@1", "self-update@1"}},
		{"access keys by glob", `statements:
  - effect: allow
    actions: "accesskey:*"
    resources: ["cfak_*"]`, []string{"grants-policies@1", "self-update@1", "wildcard-action@1"}},
		{"roles and policies", `statements:
  - effect: allow
    actions: [role:Update, policy:Write]
    resources: [role/app, policy/app]`, []string{"grants-policies@1"}},
		{"one named other key", `statements:
  - effect: allow
    actions: accesskey:Update
    resources: cfak_ABCDEFGHIJKLMNOPQRSTUVWX`, []string{"grants-policies@1"}},
		{"empty and expired window", `statements:
  - effect: allow
    actions: kms:Encrypt
    resources: alias/app
    conditions:
      DateGreaterThan: {time: "2026-01-01T00:00:00Z"}
      DateLessThan: {time: "2025-01-01T00:00:00Z"}`, []string{"expired@1", "never-matches@1"}},
	} {
		p := mustParse(t, "l.yaml", tc.doc)
		got := codes(LintAt(p, fixedNow))
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			for _, w := range LintAt(p, fixedNow) {
				t.Log(w)
			}
		}
	}
}

func TestLintWarningNamesLine(t *testing.T) {
	p := mustParseFile(t, "testdata/good/admin.yaml")
	ws := LintAt(p, fixedNow)
	if len(ws) == 0 {
		t.Fatal("no warnings for key:* on *")
	}
	if !strings.HasPrefix(ws[0].String(), "testdata/good/admin.yaml:4: statement 1 (ManageKeys): wildcard-action: allows key:* (") {
		t.Errorf("got %q", ws[0])
	}
}
