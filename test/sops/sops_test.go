// Package sops runs the real SOPS CLI against a real `coffer server`
// process: sops encrypts and decrypts files through Coffer's
// Vault-compatible transit API (--hc-vault-transit) and its AWS-KMS-
// compatible API (--kms with AWS_ENDPOINT_URL_KMS), with Coffer's own
// policies and audit deciding and recording each call (issue 17). The
// scenarios are testscripts in testdata/.
//
// The sops binary is $SOPS_BIN or .bin/sops at the module root, built by
// test/sops/build-sops.sh from the tools module tools/sops. The test skips
// unless COFFER_E2E is set; with it set, a missing sops binary, or one of
// another version than tools/sops/go.mod pins, fails it.
package sops

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/cofferkms/coffer/test/proc"
)

func TestMain(m *testing.M) { proc.Main(m) }

// TestSOPS runs each testdata/*.txtar script with `coffer` and `sops` on
// its PATH.
func TestSOPS(t *testing.T) {
	proc.RequireE2E(t, "the SOPS tests (the sops binary of test/sops/build-sops.sh, a real coffer process)")
	sops := sopsBin(t)
	coffer := proc.CofferBin(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			bin := filepath.Join(env.WorkDir, ".bin")
			if err := os.Mkdir(bin, 0o755); err != nil {
				return err
			}
			for name, target := range map[string]string{"sops": sops, "coffer": coffer} {
				if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
					return err
				}
			}
			env.Setenv("PATH", bin+string(os.PathListSeparator)+env.Getenv("PATH"))
			// sops asks GitHub for its latest release only on --version,
			// but nothing here may leave the loopback: say so anyway.
			env.Setenv("SOPS_DISABLE_VERSION_CHECK", "1")
			// The AWS SDK must take its credentials from the script's
			// environment, never from a file or the EC2 metadata service.
			env.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			env.Setenv("AWS_CONFIG_FILE", filepath.Join(env.WorkDir, "no-aws-config"))
			env.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(env.WorkDir, "no-aws-credentials"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"coffer-server": cmdCofferServer(coffer),
			"jsonenv":       cmdJSONEnv,
			"replace":       cmdReplace,
			"b64flip":       cmdB64Flip,
		},
	})
}

// sopsVersionRe finds the pinned sops version in tools/sops/go.mod.
var sopsVersionRe = regexp.MustCompile(`(?m)^\s*github\.com/getsops/sops/v3 v(\S+)`)

// sopsBin returns the sops binary and checks that it is the version
// tools/sops/go.mod pins, so that a stale cached build is not tested in
// its place.
func sopsBin(t *testing.T) string {
	t.Helper()
	root := proc.ModuleRoot(t)
	bin := os.Getenv("SOPS_BIN")
	if bin == "" {
		bin = filepath.Join(root, ".bin", "sops")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no sops binary (%v): build it with test/sops/build-sops.sh, or set SOPS_BIN", err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "tools", "sops", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := sopsVersionRe.FindSubmatch(gomod)
	if m == nil {
		t.Fatal("tools/sops/go.mod requires no github.com/getsops/sops/v3")
	}
	out, err := exec.Command(bin, "--disable-version-check", "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "sops "+string(m[1]); got != want {
		t.Fatalf("%s is %q, tools/sops/go.mod pins %q: run test/sops/build-sops.sh", bin, got, want)
	}
	return bin
}

// serverStart bounds how long coffer-server waits for the banner.
const serverStart = 30 * time.Second

// cmdCofferServer starts the real coffer binary for the rest of the script:
//
//	coffer-server
//
// It runs `coffer server --dev --tls-auto` on a free loopback port (the
// server picks it: --listen 127.0.0.1:0), with its store, certificate and
// audit log under $WORK/coffer (its output in $WORK/coffer.log), and sets
// COFFER_ADDR, COFFER_TOKEN (the root token), COFFER_CACERT (the
// --tls-auto certificate) and AUDIT_DIR from its banner. The server is
// stopped when the script ends.
func cmdCofferServer(bin string) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) > 0 {
			ts.Fatalf("usage: coffer-server")
		}
		dir := ts.MkAbs("coffer")
		ts.Check(os.Mkdir(dir, 0o700))
		p, err := proc.Start("coffer server", bin,
			[]string{"server", "--dev", "--dev-dir", dir, "--tls-auto", "--listen", "127.0.0.1:0"},
			[]string{"COFFER_TOKEN=", "COFFER_ADDR=", "COFFER_CACERT="}, ts.MkAbs("coffer.log"))
		ts.Check(err)
		ts.Defer(func() { p.Stop(10 * time.Second) })
		addr, err := p.WaitLine("Address:", serverStart)
		if err != nil {
			ts.Fatalf("coffer server: %v\n%s", err, p.Output())
		}
		// The banner comes in pieces after the address line.
		var token, cert, audit string
		err = proc.WaitFor(serverStart, 20*time.Millisecond, func() error {
			var ok1, ok2, ok3 bool
			token, ok1 = p.Line("Root token:")
			cert, ok2 = p.Line("TLS certificate:")
			audit, ok3 = p.Line("Audit log:")
			if p.Exited() {
				return proc.Permanent(fmt.Errorf("coffer server exited: %v", p.Err()))
			}
			if !ok1 || !ok2 || !ok3 {
				return fmt.Errorf("no complete banner")
			}
			return nil
		})
		if err != nil {
			ts.Fatalf("coffer server: %v\n%s", err, p.Output())
		}
		cert, _, _ = strings.Cut(cert, " ") // "PATH (SHA-256 fingerprint ...)"
		ts.Setenv("COFFER_ADDR", addr)
		ts.Setenv("COFFER_TOKEN", token)
		ts.Setenv("COFFER_CACERT", cert)
		ts.Setenv("AUDIT_DIR", audit)
		fmt.Fprintf(ts.Stdout(), "coffer server at %s\n", addr)
	}
}

// cmdJSONEnv stores a top-level string field of a JSON object file in a
// variable:
//
//	jsonenv FILE FIELD NAME
func cmdJSONEnv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: jsonenv FILE FIELD NAME")
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("jsonenv: %s: %v", args[0], err)
	}
	v, ok := doc[args[1]].(string)
	if !ok || v == "" {
		ts.Fatalf("jsonenv: %s has no string %q", args[0], args[1])
	}
	ts.Setenv(args[2], v)
}

// cmdReplace replaces the one occurrence of OLD in FILE by NEW; OLD must
// occur exactly once:
//
//	replace FILE OLD NEW
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace FILE OLD NEW")
	}
	text := ts.ReadFile(args[0])
	if n := strings.Count(text, args[1]); n != 1 {
		ts.Fatalf("replace: %q occurs %d times in %s, want once", args[1], n, args[0])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(strings.Replace(text, args[1], args[2], 1)), 0o644))
}

// cmdB64Flip changes one character of the base64 text that follows the
// one occurrence of PREFIX in FILE: the one in the middle of that text,
// replaced by another base64 character, so the bytes it encodes change
// while the text stays well-formed base64:
//
//	b64flip FILE PREFIX
func cmdB64Flip(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: b64flip FILE PREFIX")
	}
	text := ts.ReadFile(args[0])
	if n := strings.Count(text, args[1]); n != 1 {
		ts.Fatalf("b64flip: %q occurs %d times in %s, want once", args[1], n, args[0])
	}
	start := strings.Index(text, args[1]) + len(args[1])
	end := start
	for end < len(text) && isB64(text[end]) {
		end++
	}
	if end-start < 8 {
		ts.Fatalf("b64flip: no base64 text after %q in %s", args[1], args[0])
	}
	i := start + (end-start)/2
	c := byte('A')
	if text[i] == 'A' {
		c = 'B'
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(text[:i]+string(c)+text[i+1:]), 0o644))
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}
