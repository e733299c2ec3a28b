package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runPolicy runs `coffer policy ARGS` through newPolicyCmd, as root.go's
// run does, and returns the exit code and output.
func runPolicy(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := newPolicyCmd()
	// The global -o/--output flag lives on the root command.
	cmd.PersistentFlags().StringP(flagOutput, "o", outputHuman, "output format")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	markArgErrorsAsUsage(cmd)
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.Execute()
	var ee *exitError
	var ue *usageError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ee):
		code = ee.code
		if ee.err != nil {
			errb.WriteString(ee.err.Error() + "\n")
		}
	case errors.As(err, &ue):
		code = 2
		errb.WriteString(ue.Error() + "\n")
	default:
		code = 1
		errb.WriteString(err.Error() + "\n")
	}
	return code, out.String(), errb.String()
}

func writePolicy(t *testing.T, dir, name, doc string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const appPolicy = `version: 1
statements:
  - sid: OwnNamespace
    effect: allow
    actions: [kms:Decrypt]
    resources: ["alias/app-*"]
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
  - sid: NotRoot
    effect: deny
    actions: "kms:*"
    resources: alias/app-root
`

func TestPolicySimulate(t *testing.T) {
	dir := t.TempDir()
	f := writePolicy(t, dir, "app.yaml", appPolicy)
	base := []string{"simulate", "--policy", f, "--principal", "role:app,namespace=team-a,service_account=web", "--action", "kms:Decrypt"}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"allowed", []string{"--resource", "alias/app-web", "--context", "namespace=team-a"}, 0, "allow: " + f + ":3 statement 1 (OwnNamespace)\n"},
		{"other namespace", []string{"--resource", "alias/app-web", "--context", "namespace=team-b"}, 3, "deny: no statement allows it (default deny)\n"},
		{"explicit deny", []string{"--resource", "alias/app-root", "--context", "namespace=team-a"}, 3, "deny: explicitly denied by " + f + ":10 statement 2 (NotRoot)\n"},
		{"by key id with alias", []string{"--resource", "3f1c2a9e-0d4b-4c8e-9a51-7b2d6e8f0a13", "--alias", "alias/app-web", "--context", "namespace=team-a"}, 0, "allow: " + f + ":3 statement 1 (OwnNamespace)\n"},
	} {
		code, out, errOut := runPolicy(t, append(base, tc.args...)...)
		if code != tc.code || out != tc.out {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, %q", tc.name, code, out, errOut, tc.code, tc.out)
		}
	}

	code, out, _ := runPolicy(t, append(base, "--resource", "alias/app-web", "--context", "namespace=team-a", "-o", "json")...)
	var got struct {
		Allowed   bool   `json:"allowed"`
		Decision  string `json:"decision"`
		Summary   string `json:"summary"`
		Statement struct {
			Line int `json:"line"`
		} `json:"statement"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got.Decision != "allow" || got.Statement.Line != 3 ||
		!got.Allowed || !strings.HasPrefix(got.Summary, "allow: ") {
		t.Errorf("json: exit %d, %q, %v", code, out, err)
	}
}

func TestPolicySimulateKeyPolicy(t *testing.T) {
	dir := t.TempDir()
	id := writePolicy(t, dir, "id.yaml", "statements: [{effect: allow, actions: kms:Encrypt, resources: '*'}]\n")
	kp := writePolicy(t, dir, "key.yaml", "statements: [{sid: Pay, effect: allow, principals: ['role:payments'], actions: kms:Encrypt, resources: '*'}]\n")
	code, out, _ := runPolicy(t, "simulate", "--policy", id, "--key-policy", kp, "--principal", "role:payments", "--action", "kms:Encrypt", "--resource", "alias/pay")
	if code != 0 || !strings.Contains(out, "key policy "+kp+":1 statement 1 (Pay)") {
		t.Errorf("exit %d, %q", code, out)
	}
	code, out, _ = runPolicy(t, "simulate", "--policy", id, "--key-policy", kp, "--principal", "role:web", "--action", "kms:Encrypt", "--resource", "alias/pay")
	if code != 3 || !strings.Contains(out, "the key policy does not allow it") {
		t.Errorf("exit %d, %q", code, out)
	}
}

func TestPolicySimulateConditions(t *testing.T) {
	dir := t.TempDir()
	f := writePolicy(t, dir, "ci.yaml", `statements:
  - effect: allow
    actions: kms:Encrypt
    resources: alias/ci
    conditions:
      IpAddress: {source_ip: 10.0.0.0/8}
      TimeOfDay: {between: "08:00-18:00"}
`)
	args := func(ip, at string) []string {
		return []string{"simulate", "--policy", f, "--principal", "access-key:cfak_X", "--action", "kms:Encrypt", "--resource", "alias/ci", "--source-ip", ip, "--time", at}
	}
	for _, tc := range []struct {
		ip, at string
		code   int
	}{
		{"10.1.2.3", "2026-06-17T09:00:00Z", 0},
		{"192.0.2.1", "2026-06-17T09:00:00Z", 3},
		{"10.1.2.3", "2026-06-17T19:00:00Z", 3},
	} {
		if code, out, errOut := runPolicy(t, args(tc.ip, tc.at)...); code != tc.code {
			t.Errorf("%s at %s: exit %d (%s%s)", tc.ip, tc.at, code, out, errOut)
		}
	}
}

func TestPolicySimulateUsage(t *testing.T) {
	dir := t.TempDir()
	f := writePolicy(t, dir, "app.yaml", appPolicy)
	for _, args := range [][]string{
		// Without --policy files the server decides; these are refused first.
		{"simulate", "--key-policy", f, "--principal", "role:a", "--action", "kms:Decrypt"},
		{"simulate", "--principal", "root:x", "--action", "kms:Decrypt"},
		{"simulate", "--principal", "role:a,attr.team=x", "--action", "kms:Decrypt"},
		{"simulate", "--policy", f, "--action", "kms:Decrypt"},
		{"simulate", "--policy", f, "--principal", "alice", "--action", "kms:Decrypt"},
		{"simulate", "--policy", f, "--principal", "user:alice", "--action", "kms:Decrypt"},
		{"simulate", "--policy", f, "--principal", "role:a,namespace", "--action", "kms:Decrypt"},
		{"simulate", "--policy", f, "--principal", "role:a", "--action", "kms:Nope"},
		{"simulate", "--policy", f, "--principal", "role:a", "--action", "kms:Decrypt", "--source-ip", "300.1.1.1"},
		{"simulate", "--policy", f, "--principal", "role:a", "--action", "kms:Decrypt", "--time", "noon"},
		{"simulate", "--policy", f, "--principal", "role:a", "--action", "kms:Decrypt", "--context", "novalue"},
		{"validate"},
		{"lint"},
		{"simulate", "extra"},
	} {
		if code, _, errOut := runPolicy(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	dir := t.TempDir()
	good := writePolicy(t, dir, "good.yaml", appPolicy)
	bad := writePolicy(t, dir, "bad.yaml", "statements:\n  - effect: allow\n    actions: [kms:Decrpyt]\n    resources: '*'\n")
	code, out, _ := runPolicy(t, "validate", good)
	if code != 0 || out != good+": ok (2 statements)\n" {
		t.Errorf("exit %d, %q", code, out)
	}
	code, _, errOut := runPolicy(t, "validate", good, bad)
	want := bad + `:3:15: statement 1: unknown action "kms:Decrpyt"; did you mean kms:Decrypt?`
	if code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "1 of 2 policy files invalid") {
		t.Errorf("exit %d, stderr %q, want %q", code, errOut, want)
	}
	if code, _, _ := runPolicy(t, "validate", filepath.Join(dir, "missing.yaml")); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
	if code, _, _ := runPolicy(t, "simulate", "--policy", bad, "--principal", "role:a", "--action", "kms:Decrypt"); code != 1 {
		t.Errorf("simulate over an invalid file: exit %d", code)
	}
}

func TestPolicyLint(t *testing.T) {
	dir := t.TempDir()
	clean := writePolicy(t, dir, "clean.yaml", appPolicy)
	broad := writePolicy(t, dir, "broad.yaml", "statements:\n  - sid: All\n    effect: allow\n    actions: 'kms:*'\n    resources: '*'\n")
	code, out, _ := runPolicy(t, "lint", clean)
	if code != 0 || out != "1 policies, no warnings\n" {
		t.Errorf("clean: exit %d, %q", code, out)
	}
	code, out, _ = runPolicy(t, "lint", clean, broad)
	for _, w := range []string{broad + ":2: statement 1 (All): wildcard-action: allows kms:* (7 actions)",
		broad + ":2: statement 1 (All): wildcard-resource:", broad + ":2: statement 1 (All): unconditioned-read: allows kms:Decrypt, kms:ReEncrypt, kms:GenerateDataKey"} {
		if !strings.Contains(out, w) {
			t.Errorf("lint output lacks %q:\n%s", w, out)
		}
	}
	if code != 3 {
		t.Errorf("exit %d, want 3", code)
	}
	code, out, _ = runPolicy(t, "lint", "-o", "json", broad)
	var ws []map[string]any
	if err := json.Unmarshal([]byte(out), &ws); err != nil || code != 3 || len(ws) != 3 {
		t.Fatalf("json: exit %d, %q, %v", code, out, err)
	}
	// snake_case field names, as everywhere in the CLI's JSON.
	for _, k := range []string{"code", "policy", "line", "statement", "message"} {
		if _, ok := ws[0][k]; !ok {
			t.Errorf("lint JSON lacks %q: %v", k, ws[0])
		}
	}
	if _, ok := ws[0]["Code"]; ok {
		t.Errorf("lint JSON has Go field names: %v", ws[0])
	}
}

func TestPolicyActions(t *testing.T) {
	code, out, _ := runPolicy(t, "actions")
	if code != 0 || !strings.Contains(out, "kms:Decrypt") || !strings.Contains(out, "secret:Read") {
		t.Errorf("exit %d, %q", code, out)
	}
}
