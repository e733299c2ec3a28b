package cli

import (
	"crypto/subtle"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/credential"
)

// The testscripts (generate_root, rekey, migrate_seal) run these commands
// against a real Shamir server. What a script cannot reach -- the answers
// of a server with an auto-unseal, a migration that completes -- is
// checked here against canned answers, as well as the decode checks.

// testToken is a new well-formed token.
func testToken() string {
	return credential.New(credential.TokenPrefix)
}

// encodeWith XORs tok with pad and returns both in standard base64.
func encodeWith(t *testing.T, tok string, pad []byte) (enc, otp string) {
	t.Helper()
	if len(pad) != len(tok) {
		t.Fatalf("pad of %d bytes for a token of %d", len(pad), len(tok))
	}
	b := make([]byte, len(tok))
	subtle.XORBytes(b, []byte(tok), pad)
	return base64.StdEncoding.EncodeToString(b), base64.StdEncoding.EncodeToString(pad)
}

func TestDecodeRootToken(t *testing.T) {
	tok := testToken()
	if !credential.Valid(credential.TokenPrefix, tok) {
		t.Fatalf("test token %q is not valid", tok)
	}
	pad := make([]byte, len(tok))
	for i := range pad {
		pad[i] = byte(i*37 + 11)
	}
	enc, otp := encodeWith(t, tok, pad)

	got, err := decodeRootToken(enc, []byte(otp+"\n"))
	if err != nil || got != tok {
		t.Fatalf("decode = %q, %v; want the token", got, err)
	}

	// Another pad of the right length gives bytes that are no token.
	other := append([]byte(nil), pad...)
	other[len(other)-1] ^= 0x80
	if _, err := decodeRootToken(enc, []byte(base64.StdEncoding.EncodeToString(other))); err == nil ||
		!strings.Contains(err.Error(), "no valid token") {
		t.Errorf("wrong pad: err = %v; want no valid token", err)
	}
	// Bytes of the right length that are not a token (another prefix)
	// are refused: only a token is a root token.
	notTok := "cfx_" + tok[4:]
	encNot, _ := encodeWith(t, notTok, pad)
	if _, err := decodeRootToken(encNot, []byte(otp)); err == nil {
		t.Errorf("decoding to %q... succeeded; want only tokens", notTok[:4])
	}
	// Lengths must match.
	if _, err := decodeRootToken(enc, []byte(base64.StdEncoding.EncodeToString(pad[1:]))); err == nil ||
		!strings.Contains(err.Error(), "bytes but the pad") {
		t.Errorf("short pad: err = %v", err)
	}
	if _, err := decodeRootToken("", []byte("")); err == nil {
		t.Error("empty encoded token and pad decoded")
	}
	// Standard base64 only.
	if _, err := decodeRootToken(strings.NewReplacer("+", "-", "/", "_").Replace(enc)+"!", []byte(otp)); err == nil ||
		!strings.Contains(err.Error(), "encoded token is not standard base64") {
		t.Errorf("bad encoded: err = %v", err)
	}
	if _, err := decodeRootToken(enc, []byte("%%%")); err == nil || !strings.Contains(err.Error(), "pad is not standard base64") {
		t.Errorf("bad pad: err = %v", err)
	}
}

func TestWriteNewSecretFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "otp.txt")
	if err := writeNewSecretFile(p, []byte("pad\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	if err := writeNewSecretFile(p, []byte("other\n")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("overwrite: err = %v; want exists", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "pad\n" {
		t.Errorf("file now holds %q", b)
	}
	// A symbolic link planted at the name is not followed.
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal("making a symbolic link:", err)
	}
	if err := writeNewSecretFile(link, []byte("pad\n")); err == nil {
		t.Error("wrote through a dangling symbolic link")
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("the link's target was created")
	}
}

// An auto-unseal server's init answer: recovery shares, and the text says
// the server unsealed itself and what the recovery shares are for.
func TestOperatorInitAutoUnseal(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"GET /v1/sys/seal-status": {200, `{"initialized":false,"sealed":true,"threshold":0,"shares":0,"progress":0,"seal":{"type":"pkcs11","healthy":true,"retrying":true,"failures":0}}`},
		"POST /v1/sys/init":       {200, `{"shares":[],"root_token":"cft_x","type":"pkcs11","recovery_shares":["r-one","r-two"]}`},
	})
	code, out, errOut := runCLI(t, "", "operator", "init", "--recovery-shares", "2", "--recovery-threshold", "2")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"shares":2,"threshold":2}`)
	for _, want := range []string{"Recovery share 1:  r-one\n", "Recovery share 2:  r-two\n", "Root token:", "unsealed\nitself through its pkcs11 seal",
		"they decrypt nothing", "'coffer operator generate-root', 'rekey' and\n'migrate-seal'", "WARNING: The recovery shares and the root token are shown only once"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Unseal share") || strings.Contains(out, "It is sealed") {
		t.Errorf("auto-unseal init talks of unseal shares:\n%s", out)
	}
	code, out, errOut = runCLI(t, "", "operator", "init", "--shares", "2", "--threshold", "2", "-o", "json")
	if code != 0 || !strings.Contains(errOut, "WARNING: The recovery shares") {
		t.Fatalf("json: exit %d, stderr %q", code, errOut)
	}
	sameJSON(t, out, `{"shares":[],"root_token":"cft_x","type":"pkcs11","recovery_shares":["r-one","r-two"]}`)
}

// The status of an auto-unseal server shows the seal, its recovery
// configuration and its health; sealed, it exits 3 and counts progress
// against the recovery threshold.
func TestOperatorStatusAutoUnseal(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"GET /v1/sys/seal-status": {200, `{"initialized":true,"sealed":true,"threshold":0,"shares":0,"progress":1,"version":"0.2.0",
			"type":"pkcs11","recovery_shares":5,"recovery_threshold":3,"configured_type":"pkcs11",
			"seal":{"type":"pkcs11","info":{"key_label":"coffer-root"},"healthy":false,"health_error":"CKR_DEVICE_REMOVED","checked_at":"2026-01-02T03:04:05Z",
			"last_unseal_error":"the HSM is not reachable","retrying":false,"failures":4,"sealed_by_operator":true}}`},
	})
	code, out, errOut := runCLI(t, "", "operator", "seal-status")
	if code != exitNo || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, re := range []string{`(?m)^Seal type: +pkcs11$`, `(?m)^Recovery shares: +5$`, `(?m)^Recovery threshold: +3$`,
		`(?m)^Unseal progress: +1/3$`, `(?m)^Migration pending: +false$`, `(?m)^Healthy: +false$`, `(?m)^Health error: +CKR_DEVICE_REMOVED$`,
		`(?m)^Last unseal error: +the HSM is not reachable$`, `(?m)^Retrying: +false$`, `(?m)^Failures: +4$`,
		`(?m)^Sealed by operator: +true$`, `(?m)^Auto-unseal info: +key_label=coffer-root$`} {
		if !regexpMatch(re, out) {
			t.Errorf("stdout lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "Total shares") {
		t.Errorf("auto-unseal status shows unseal shares:\n%s", out)
	}

	// After an operator's seal, unseal takes recovery shares: progress
	// counts against the recovery threshold, not the (zero) unseal one.
	f.set("POST /v1/sys/unseal", cannedReply{200, `{"initialized":true,"sealed":true,"threshold":0,"shares":0,"progress":2,"type":"pkcs11","recovery_shares":5,"recovery_threshold":3}`})
	code, out, errOut = runCLI(t, "r-one\n", "operator", "unseal")
	if code != 0 || out != "Unseal progress: 2/3\n" {
		t.Errorf("unseal: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// A pending migration shows in status (with what to do on stderr); unseal
// passes the server's migration_pending message on; a completed migration
// prints the new shares once.
func TestMigrateSealAnswers(t *testing.T) {
	const msg = "seal migration pending: the store's root key is protected by shamir but this server is configured with pkcs11; " +
		"to migrate, submit a quorum of the current unseal shares with `coffer operator migrate-seal`"
	f := newFakeAPI(t, map[string]cannedReply{
		"GET /v1/sys/seal-status": {200, `{"initialized":true,"sealed":true,"threshold":2,"shares":3,"progress":0,"type":"shamir","configured_type":"pkcs11","migration_pending":true}`},
		"POST /v1/sys/unseal":     {409, `{"error":{"code":"migration_pending","message":"` + msg + `"}}`},
		"POST /v1/sys/migrate-seal": {200, `{"initialized":true,"sealed":true,"threshold":2,"progress":1,"type":"shamir",
			"configured_type":"pkcs11","migration_pending":true,"complete":false}`},
	})
	code, out, errOut := runCLI(t, "", "operator", "status")
	if code != exitNo || !regexpMatch(`(?m)^Migration pending: +true$`, out) || !regexpMatch(`(?m)^Migration progress: +0/2$`, out) ||
		!strings.Contains(errOut, "A seal migration from shamir to pkcs11 is pending: submit a quorum of the current unseal shares with 'coffer operator migrate-seal'") {
		t.Errorf("status: exit %d\n%s\nstderr %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "s-one\n", "operator", "unseal")
	if code != exitCodeError || !strings.Contains(errOut, "coffer: error: migration_pending: "+msg) {
		t.Errorf("unseal: exit %d, stderr %q", code, errOut)
	}

	code, out, errOut = runCLI(t, "s-one\n", "operator", "migrate-seal", "--shares", "4", "--threshold", "3")
	if code != 0 || out != "Migration progress: 1/2\n" {
		t.Errorf("migrate-seal: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	sameJSON(t, f.last(t).body, `{"share":"s-one","shares":4,"threshold":3}`)

	// The last share, migrating from Shamir to an auto-unseal: new
	// recovery shares.
	f.set("POST /v1/sys/migrate-seal", cannedReply{200, `{"initialized":true,"sealed":false,"threshold":0,"progress":0,"type":"pkcs11",
		"recovery_shares":2,"recovery_threshold":2,"configured_type":"pkcs11","complete":true,"new_recovery_shares":["n-one","n-two"]}`})
	code, out, errOut = runCLI(t, "s-two\n", "operator", "migrate-seal")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	sameJSON(t, f.last(t).body, `{"share":"s-two"}`)
	for _, want := range []string{"Recovery share 1:  n-one\n", "Recovery share 2:  n-two\n", "2 new recovery shares with a threshold of 2",
		"WARNING: The new recovery shares are shown only once, and the old ones no longer work."} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "Seal migration complete: the root key is now protected by pkcs11") {
		t.Errorf("stderr %q", errOut)
	}

	// Back to Shamir: new unseal shares, also as JSON.
	f.set("POST /v1/sys/migrate-seal", cannedReply{200, `{"initialized":true,"sealed":false,"threshold":1,"progress":0,"type":"shamir",
		"configured_type":"shamir","complete":true,"shares":1,"new_shares":["u-one"]}`})
	code, out, errOut = runCLI(t, "s-two\n", "operator", "migrate-seal", "-o", "json")
	if code != 0 || !strings.Contains(errOut, "WARNING: The new unseal shares are shown only once") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, `"complete": true`) || !strings.Contains(out, `"u-one"`) {
		t.Errorf("json: %s", out)
	}
}

// A submission whose --fingerprint differs sends no share.
func TestGenerateRootFingerprintMismatchSendsNothing(t *testing.T) {
	f := newFakeAPI(t, map[string]cannedReply{
		"GET /v1/sys/generate-root/attempt": {200, `{"started":true,"nonce":"abc","progress":0,"required":2,"otp_length":47,"otp_fingerprint":"0123456789abcdef","complete":false}`},
		"POST /v1/sys/generate-root/update": {200, `{"started":true,"nonce":"abc","progress":1,"required":2,"otp_length":47,"otp_fingerprint":"0123456789abcdef","complete":false}`},
	})
	code, _, errOut := runCLI(t, "share\n", "operator", "generate-root", "submit", "--nonce", "abc", "--fingerprint", "fedcba9876543210")
	if code != exitCodeError || !strings.Contains(errOut, "your share was not sent") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if r := f.last(t); r.route != "GET /v1/sys/generate-root/attempt" {
		t.Errorf("last request %s; want only the status read", r.route)
	}
	// The same fingerprint, in capitals, goes ahead.
	code, out, errOut := runCLI(t, "share\n", "operator", "generate-root", "submit", "--nonce", "abc", "--fingerprint", "0123456789ABCDEF")
	if code != 0 || out != "Generate-root progress: 1/2\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	sameJSON(t, f.last(t).body, `{"nonce":"abc","share":"share"}`)
}

// regexpMatch reports whether the regular expression re matches s.
func regexpMatch(re, s string) bool {
	return regexp.MustCompile(re).MatchString(s)
}
