package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SoftHSM reads SOFTHSM2_CONF and lists its tokens once, at C_Initialize,
// and a loaded PKCS#11 library is process-global. So TestMain makes one
// token directory for the whole test binary and creates every token (and
// the keys made with pkcs11-tool) before any test loads the library; each
// test then uses its own token.
const (
	testPIN   = "87654321"
	testSOPIN = "12345678"
)

// Tokens, one per concern, created by TestMain.
const (
	tokGCM      = "gcm"
	tokKWP      = "kwp"
	tokRSA      = "rsa"
	tokOther    = "other" // a second token with keys of the same labels
	tokTool     = "tool"  // keys made with pkcs11-tool
	tokPIN      = "pin"
	tokReinit   = "reinit"
	tokMissing  = "missing"
	tokGenerate = "generate"
	tokFault    = "fault"
)

var allTokens = []string{tokGCM, tokKWP, tokRSA, tokOther, tokTool, tokPIN, tokReinit, tokMissing, tokGenerate, tokFault}

// Keys made with pkcs11-tool on tokTool, and the known-answer key's value.
const (
	toolKey          = "tool-aes"    // --private --sensitive --id 0a0b
	toolKeyID        = "0a0b"        //
	toolPublicKey    = "tool-public" // no --private: refused
	toolRSA          = "tool-rsa"
	toolExtractable  = "tool-extractable"
	toolNotSensitive = "tool-not-sensitive"
	katKey           = "kat"
	katKeyHex        = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)

var (
	hsmLib   string // the SoftHSM module, when the HSM tests run
	hsmSetup error  // why they cannot run (COFFER_E2E set): the tests fail
	hsmSkip  bool   // COFFER_E2E unset: the HSM tests skip
)

// softhsmLibs are the standard places of the SoftHSM 2 module.
var softhsmLibs = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

func TestMain(m *testing.M) {
	var dir string
	if os.Getenv("COFFER_E2E") == "" {
		hsmSkip = true
	} else {
		var err error
		dir, err = os.MkdirTemp("", "coffer-pkcs11-test-")
		if err == nil {
			err = setupSoftHSM(dir)
		}
		hsmSetup = err
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// setupSoftHSM writes the SoftHSM configuration, points SOFTHSM2_CONF at it
// and creates the tokens and the pkcs11-tool keys.
func setupSoftHSM(dir string) error {
	for _, l := range softhsmLibs {
		if _, err := os.Stat(l); err == nil {
			hsmLib = l
			break
		}
	}
	if hsmLib == "" {
		return fmt.Errorf("COFFER_E2E is set but no SoftHSM 2 module was found in %v (Debian: apt-get install softhsm2)", softhsmLibs)
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("COFFER_E2E is set but %s is not installed (Debian: softhsm2, opensc)", tool)
		}
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	for _, label := range allTokens {
		if err := run("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", testPIN, "--so-pin", testSOPIN); err != nil {
			return err
		}
	}
	tool := func(args ...string) error {
		return run("pkcs11-tool", append([]string{"--module", hsmLib, "--token-label", tokTool, "--login", "--pin", testPIN}, args...)...)
	}
	// The ceremony of docs: a private, sensitive, non-extractable AES-256 key.
	if err := tool("--keygen", "--key-type", "AES:32", "--label", toolKey, "--id", toolKeyID, "--private", "--sensitive"); err != nil {
		return err
	}
	// The command without --private makes a key any process can use
	// without the PIN.
	if err := tool("--keygen", "--key-type", "AES:32", "--label", toolPublicKey, "--sensitive"); err != nil {
		return err
	}
	if err := tool("--keygen", "--key-type", "AES:32", "--label", toolExtractable, "--private", "--sensitive", "--extractable"); err != nil {
		return err
	}
	if err := tool("--keygen", "--key-type", "AES:32", "--label", toolNotSensitive, "--private"); err != nil {
		return err
	}
	if err := tool("--keypairgen", "--key-type", "rsa:2048", "--label", toolRSA, "--id", "0c", "--private", "--sensitive", "--usage-decrypt"); err != nil {
		return err
	}
	kat := filepath.Join(dir, "kat.key")
	raw, _ := decodeHex(katKeyHex)
	if err := os.WriteFile(kat, raw, 0o600); err != nil {
		return err
	}
	return tool("--write-object", kat, "--type", "secrkey", "--key-type", "AES:32", "--label", katKey, "--id", "4b4154",
		"--private", "--sensitive", "--usage-decrypt")
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// needHSM skips without COFFER_E2E and fails when it is set and SoftHSM is
// not usable.
func needHSM(t testing.TB) {
	t.Helper()
	if hsmSkip {
		t.Skip("set COFFER_E2E=1 to run the SoftHSM tests")
	}
	if hsmSetup != nil {
		t.Fatal(hsmSetup)
	}
}

// pinFile writes pin to a 0600 file in a temporary directory.
func pinFile(t testing.TB, pin string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(p, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// config is a configuration for token and key label with the right PIN.
func config(t testing.TB, token, key, mech string) Config {
	return Config{Library: hsmLib, TokenLabel: token, PINFile: pinFile(t, testPIN), KeyLabel: key, Mechanism: mech}
}

// open makes a seal that the test closes.
func open(t testing.TB, c Config) *Seal {
	t.Helper()
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testCtx bounds a test's calls.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rootKey is a fixed 32-byte test root key.
func rootKey(b byte) []byte {
	k := make([]byte, rootKeySize)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// wantErr fails unless err wraps target.
func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v; want one wrapping %q", err, target)
	}
}
