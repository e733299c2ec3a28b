package seal

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// TestPKCS11 runs a server with a SoftHSM2 seal: init gives recovery
// shares and unseals at once; after a keyring rotation and a SIGKILL the
// restarted server unseals itself and every ciphertext decrypts; the seal
// status and metrics tell what happened. Then each fault (wrong PIN, a
// missing key, a library that is no PKCS#11 module) leaves it sealed with
// an error that says what to fix and loses nothing, and a manual seal
// holds until a quorum of recovery shares.
func TestPKCS11(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	h := newHSM(t, "coffer")
	good := h.seal("coffer", "root-wrap", true)
	s := newServer(t, "pkcs11", h.env()...)
	s.seal = good.yaml()
	s.mustStart()
	c := s.client("")
	if st := status(t, c); st.Initialized || st.Seal == nil || st.Seal.Type != "pkcs11" {
		t.Fatalf("before init: %s", describe(st))
	}
	ir := initAuto(t, s, "pkcs11", 3, 2)
	c.SetToken(ir.RootToken)
	ctx := testCtx(t)
	key := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "before-rotation", 200)
	rot := must[*client.RotateKeyringResponse](t, "RotateKeyring")(c.RotateKeyring(ctx))
	if rot.Term < 2 {
		t.Fatalf("keyring rotation answered term %d", rot.Term)
	}
	d.write(t, c, key.ID, "after-rotation", 10)

	// A crash, a restart: unsealed by the HSM, nothing lost.
	s.restart()
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	st := status(t, c)
	if st.Type != "pkcs11" || st.Seal == nil || st.Seal.Type != "pkcs11" || !st.Seal.Healthy || st.Seal.UnsealSeconds <= 0 ||
		st.Seal.Failures != 0 || st.Seal.LastUnsealError != "" || st.RecoveryShares != 3 || st.RecoveryThreshold != 2 {
		t.Fatalf("after the restart: %s", describe(st))
	}
	if info := st.Seal.Info; info["token_label"] != "coffer" || info["key_label"] != "root-wrap" || info["library"] != h.lib {
		t.Errorf("seal info %v does not name the library, token and key", info)
	}
	for _, v := range st.Seal.Info {
		if strings.Contains(v, hsmPIN) {
			t.Error("the seal info shows the PIN")
		}
	}
	m := metrics(t, s)
	if v := metricLine(m, `coffer_seal_healthy{type="pkcs11"}`); v != "1" {
		t.Errorf(`coffer_seal_healthy{type="pkcs11"} = %q, want 1`, v)
	}
	if v := metricLine(m, `coffer_unseal_duration_seconds{type="pkcs11"}`); v == "" {
		t.Errorf("no coffer_unseal_duration_seconds sample for pkcs11 in /metrics")
	} else if f, err := strconv.ParseFloat(v, 64); err != nil || f <= 0 {
		t.Errorf("coffer_unseal_duration_seconds = %q", v)
	}
	if v := metricLine(m, `coffer_auto_unseal_failing{type="pkcs11"}`); v != "" && v != "0" {
		t.Errorf("coffer_auto_unseal_failing = %q while unsealed", v)
	}

	// Each fault, then the fixed configuration: all data back.
	recover := func(what string) {
		t.Helper()
		s.seal = good.yaml()
		writeFile(t, h.pinFile, hsmPIN+"\n")
		s.restart()
		waitUnsealed(t, c, patience())
		d.verify(t, c)
		t.Logf("%s: recovered after fixing the configuration", what)
	}

	t.Run("wrong PIN", func(t *testing.T) {
		writeFile(t, h.pinFile, badPIN+"\n")
		s.restart()
		st := sealedWithError(t, c)
		msg := st.Seal.LastUnsealError
		if !strings.Contains(strings.ToUpper(msg), "PIN") {
			t.Errorf("the error does not mention the PIN: %q", msg)
		}
		if st.Seal.Retrying || st.Seal.Failures != 1 {
			t.Errorf("a wrong PIN must not be retried (an HSM locks the token): %s", describe(st))
		}
		time.Sleep(3 * time.Second)
		st = status(t, c)
		if !st.Sealed || st.Seal.Failures != 1 {
			t.Errorf("3 s later: %s; want sealed, still 1 failure", describe(st))
		}
		for _, secret := range []string{badPIN, hsmPIN} {
			if strings.Contains(msg, secret) || strings.Contains(s.output(), secret) {
				t.Errorf("a PIN value appears in the seal status or the server's output")
			}
		}
		m := metrics(t, s)
		for metric, want := range map[string]string{
			`coffer_auto_unseal_failing{type="pkcs11"}`:        "1",
			`coffer_auto_unseal_failures_total{type="pkcs11"}`: "1",
			`coffer_sealed`: "1",
		} {
			if v := metricLine(m, metric); v != want {
				t.Errorf("%s = %q with a wrong PIN, want %s", metric, v, want)
			}
		}
		if !strings.Contains(s.output(), "auto-unseal failed") {
			t.Errorf("the server logged no auto-unseal failure")
		}
		recover("wrong PIN")
	})

	t.Run("missing key", func(t *testing.T) {
		s.seal = h.seal("coffer", "no-such-key", false).yaml()
		s.restart()
		st := sealedWithError(t, c)
		if msg := st.Seal.LastUnsealError; !strings.Contains(msg, "no-such-key") {
			t.Errorf("the error does not name the missing key label: %q", msg)
		}
		// The blob names the key that wrapped it: the error names both,
		// so the operator sees the typo. (The loop keeps retrying this
		// one, with backoff: see the notes.)
		if msg := st.Seal.LastUnsealError; !strings.Contains(msg, "root-wrap") {
			t.Errorf("the error does not name the key that wrapped the root key: %q", msg)
		}
		if st.Seal.HealthError == "" || !strings.Contains(st.Seal.HealthError, "no-such-key") {
			t.Errorf("the health check does not report the missing key: %s", describe(st))
		}
		t.Logf("missing key: retrying=%t: %s", st.Seal.Retrying, st.Seal.LastUnsealError)
		recover("missing key")
	})

	for _, lib := range notModules() {
		t.Run("library "+lib, func(t *testing.T) {
			bad := good
			bad.lib = lib
			s.seal = bad.yaml()
			s.kill()
			if err := s.start(); err != nil {
				// Refused at start: the message must name the library.
				if !strings.Contains(err.Error(), lib) {
					t.Errorf("the server refused to start, but the message does not name %s:\n%v", lib, err)
				}
				t.Logf("%s: the server refuses to start: %s", lib, lastLine(s.output()))
			} else {
				st := sealedWithError(t, c)
				if !strings.Contains(st.Seal.LastUnsealError, lib) {
					t.Errorf("sealed, but the error does not name %s: %q", lib, st.Seal.LastUnsealError)
				}
				if st.Seal.Retrying {
					t.Errorf("a library that is no PKCS#11 module is retried: %s", describe(st))
				}
				t.Logf("%s: the server stays sealed: %s", lib, st.Seal.LastUnsealError)
			}
			recover("library " + lib)
		})
	}

	t.Run("manual seal", func(t *testing.T) {
		if err := c.Seal(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		st := status(t, c)
		if !st.Sealed || st.Seal == nil || !st.Seal.SealedByOperator || st.Seal.Retrying {
			t.Fatalf("after a manual seal: %s", describe(st))
		}
		time.Sleep(3 * time.Second) // the auto-unseal loop ticks every second
		if st := status(t, c); !st.Sealed {
			t.Fatalf("the auto-unseal undid a manual seal: %s", describe(st))
		}
		if _, err := c.Encrypt(testCtx(t), client.EncryptRequest{KeyID: "alias/e2e", Plaintext: []byte("x")}); err == nil {
			t.Fatal("encrypt succeeded while sealed")
		}
		st = must[*client.SealStatus](t, "Unseal")(c.Unseal(testCtx(t), client.UnsealRequest{Share: ir.RecoveryShares[2]}))
		if !st.Sealed || st.Progress != 1 {
			t.Fatalf("after one recovery share: %s", describe(st))
		}
		st = must[*client.SealStatus](t, "Unseal")(c.Unseal(testCtx(t), client.UnsealRequest{Share: ir.RecoveryShares[0]}))
		if st.Sealed {
			t.Fatalf("a quorum of recovery shares did not unseal: %s", describe(st))
		}
		waitUnsealed(t, c, patience())
		d.verify(t, c)
		if st := status(t, c); st.Seal.SealedByOperator || !st.Seal.Retrying {
			t.Errorf("after the recovery unseal the auto-unseal should be back in charge: %s", describe(st))
		}
		// A manual seal lasts until the next start, which unseals.
		if err := c.Seal(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		s.restart()
		waitUnsealed(t, c, patience())
		d.verify(t, c)
	})
}

// TestPKCS11HSMGone removes the token directory of a running, unsealed
// server: the HSM is not on the crypto path, so it keeps serving; the next
// health check (every 30 s) marks the seal unhealthy. It takes about 30 s
// and runs in parallel with the rest.
func TestPKCS11HSMGone(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	h := newHSM(t, "coffer")
	s := newServer(t, "pkcs11-gone", h.env()...)
	s.seal = h.seal("coffer", "root-wrap", true).yaml()
	s.mustStart()
	c := s.client("")
	ir := initAuto(t, s, "pkcs11", 1, 1)
	c.SetToken(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(testCtx(t), client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "before", 20)
	// Right after init the health check that ran at start (before the
	// key existed) still says unhealthy until the next one, 30 s later
	// (see the notes); a restart checks with the key in place.
	s.restart()
	waitUnsealed(t, c, patience())
	if st := status(t, c); !st.Seal.Healthy {
		t.Fatalf("healthy at start: %s", describe(st))
	}

	gone := h.tokenDir + ".gone"
	if err := os.Rename(h.tokenDir, gone); err != nil {
		t.Fatal(err)
	}
	d.write(t, c, "alias/e2e", "hsm-gone", 20)
	d.verify(t, c)
	start := time.Now()
	st := waitStatus(t, c, 45*time.Second, func(st *client.SealStatus) error {
		if st.Seal.Healthy {
			return errorf("still healthy")
		}
		return nil
	})
	t.Logf("marked unhealthy %s after the token directory went: %q", time.Since(start).Round(time.Second), st.Seal.HealthError)
	if st.Sealed || st.Seal.HealthError == "" {
		t.Fatalf("unhealthy seal: %s", describe(st))
	}
	if v := metricLine(metrics(t, s), `coffer_seal_healthy{type="pkcs11"}`); v != "0" {
		t.Errorf(`coffer_seal_healthy{type="pkcs11"} = %q with the HSM gone, want 0`, v)
	}
	d.verify(t, c) // still serving

	// The HSM back, a restart: everything decrypts.
	if err := os.Rename(gone, h.tokenDir); err != nil {
		t.Fatal(err)
	}
	s.restart()
	waitUnsealed(t, c, patience())
	d.verify(t, c)
}

// notModules are files that are no PKCS#11 module: a program and, where
// it is found, the C library.
func notModules() []string {
	out := []string{"/bin/true"}
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return append(out, p)
		}
	}
	return out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
