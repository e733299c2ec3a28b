package pkcs11

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferkms/coffer/internal/seal"
)

// mechanisms and the token each one's tests use (with generate_key).
var mechanisms = []struct{ name, token string }{
	{MechanismAESGCM, tokGCM},
	{MechanismAESKeyWrapPad, tokKWP},
	// SoftHSM 2.6 does RSA-OAEP with SHA-1 only: rsa-oaep (SHA-256) has
	// its own test, TestRSAOAEPSHA256; the RSA code is the same.
	{MechanismRSAOAEPSHA1, tokRSA},
}

// generated opens a seal on token with generate_key and makes sure the key
// exists.
func generated(t testing.TB, token, key, mech string) *Seal {
	t.Helper()
	c := config(t, token, key, mech)
	c.GenerateKey = true
	s := open(t, c)
	if err := s.EnsureKey(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	needHSM(t)
	for _, m := range mechanisms {
		t.Run(m.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := generated(t, m.token, "root", m.name)
			if s.Type() != "pkcs11" {
				t.Fatalf("Type %q", s.Type())
			}
			key := rootKey(1)
			b1, err := s.Wrap(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Unwrap(ctx, b1)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatal("unwrapped another key")
			}
			parsed, err := parseBlob(b1)
			if err != nil {
				t.Fatal(err)
			}
			if parsed.mech.String() != m.name || parsed.keyLabel != "root" || len(parsed.keyID) != keyIDSize {
				t.Fatalf("blob records %s, %q, id %x", parsed.mech, parsed.keyLabel, parsed.keyID)
			}
			if bytes.Contains(b1, key) {
				t.Fatal("the blob holds the root key in clear")
			}
			// A fresh IV (GCM) or fresh OAEP padding per wrap.
			b2, err := s.Wrap(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if m.name != MechanismAESKeyWrapPad && bytes.Equal(b1, b2) {
				t.Fatal("two wraps gave the same blob")
			}
			if err := s.Health(ctx); err != nil {
				t.Fatal(err)
			}
			// A second seal on the same key (another process would be the
			// same) opens the blob.
			other := open(t, config(t, m.token, "root", m.name))
			if got, err := other.Unwrap(ctx, b2); err != nil || !bytes.Equal(got, key) {
				t.Fatalf("second seal: %v", err)
			}
			if _, err := s.Wrap(ctx, key[:31]); err == nil {
				t.Fatal("wrapped a 31-byte key")
			}
		})
	}
}

func TestInfo(t *testing.T) {
	slot := uint(7)
	s := &Seal{cfg: Config{Library: "/lib/p.so", Slot: &slot, PINEnv: "COFFER_HSM_PIN", KeyLabel: "root", Mechanism: MechanismRSAOAEP}}
	info := s.Info()
	want := map[string]string{"type": "pkcs11", "library": "/lib/p.so", "slot": "7", "key_label": "root",
		"mechanism": "rsa-oaep", "pin_env": "COFFER_HSM_PIN", "generate_key": "false"}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("Info[%s] = %q, want %q", k, info[k], v)
		}
	}
	if len(info) != len(want) {
		t.Errorf("Info has %v", info)
	}
}

// TestTamper flips every bit position's byte of each mechanism's blob: all
// must fail with ErrBlob, none may return a key.
func TestTamper(t *testing.T) {
	needHSM(t)
	for _, m := range mechanisms {
		t.Run(m.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := generated(t, m.token, "root", m.name)
			b, err := s.Wrap(ctx, rootKey(2))
			if err != nil {
				t.Fatal(err)
			}
			for i := range b {
				bad := append([]byte{}, b...)
				bad[i] ^= 0x01
				got, err := s.Unwrap(ctx, bad)
				if err == nil || got != nil {
					t.Fatalf("byte %d flipped: opened", i)
				}
				wantErr(t, err, seal.ErrBlob)
			}
		})
	}
}

// TestOtherKey: a blob from one key does not open with another key of the
// same label (another token) nor with a seal of another label, and says so.
func TestOtherKey(t *testing.T) {
	needHSM(t)
	for _, m := range mechanisms {
		t.Run(m.name, func(t *testing.T) {
			ctx := testCtx(t)
			a := generated(t, m.token, "root", m.name)
			b := generated(t, tokOther, "root-"+m.name, m.name)
			blobA, err := a.Wrap(ctx, rootKey(3))
			if err != nil {
				t.Fatal(err)
			}
			// Same label on the other token: relabel the blob so that the
			// label check passes and the CKA_ID check must catch it.
			p, _ := parseBlob(blobA)
			p.keyLabel = "root-" + m.name
			_, err = b.Unwrap(ctx, p.marshal())
			wantErr(t, err, seal.ErrBlob)
			if !strings.Contains(err.Error(), "CKA_ID") {
				t.Fatalf("error %q does not name the key id", err)
			}
			// With the id of b's key too, only the token's decryption can
			// refuse it.
			blobB, _ := b.Wrap(ctx, rootKey(4))
			pb, _ := parseBlob(blobB)
			p.keyID = pb.keyID
			_, err = b.Unwrap(ctx, p.marshal())
			wantErr(t, err, seal.ErrBlob)
			if !strings.Contains(err.Error(), "refused to open") {
				t.Fatalf("error %q is not the token's refusal", err)
			}
			// Another label: refused before the token is asked.
			_, err = b.Unwrap(ctx, blobA)
			wantErr(t, err, seal.ErrBlob)
			if !strings.Contains(err.Error(), `wrapped by the key labelled "root" but this seal uses`) {
				t.Fatalf("error %q does not name the blob's key", err)
			}
		})
	}
	// A blob of another mechanism.
	ctx := testCtx(t)
	gcm := generated(t, tokGCM, "root", MechanismAESGCM)
	kwp := generated(t, tokKWP, "root", MechanismAESKeyWrapPad)
	blob, err := kwp.Wrap(ctx, rootKey(5))
	if err != nil {
		t.Fatal(err)
	}
	_, err = gcm.Unwrap(ctx, blob)
	wantErr(t, err, seal.ErrBlob)
}

// TestKnownAnswerGCM pins the aes-gcm construction against Go's AES-GCM
// with a key of known value (imported with pkcs11-tool): the seal's blob
// opens in Go under the documented IV and additional data, and a blob made
// in Go opens with the seal.
func TestKnownAnswerGCM(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := open(t, config(t, tokTool, katKey, MechanismAESGCM))
	key, _ := hex.DecodeString(katKeyHex)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)

	data, err := s.Wrap(ctx, rootKey(6))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	if string(b.keyID) != "KAT" {
		t.Fatalf("blob records key id %q", b.keyID)
	}
	pt, err := gcm.Open(nil, b.iv, b.ciphertext, b.aad())
	if err != nil {
		t.Fatalf("Go cannot open the seal's blob: %v", err)
	}
	if !bytes.Equal(pt, rootKey(6)) {
		t.Fatal("another plaintext")
	}

	iv := seq(0x40, 12)
	b = &blob{mech: mechAESGCM, keyLabel: katKey, keyID: []byte("KAT"), iv: iv}
	b.ciphertext = gcm.Seal(nil, iv, rootKey(7), b.aad())
	got, err := s.Unwrap(ctx, b.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rootKey(7)) {
		t.Fatal("the HSM opened a Go blob to another value")
	}
	// The additional data is bound: the same plaintext sealed under the
	// bare header (no context string) does not open.
	b.ciphertext = gcm.Seal(nil, iv, rootKey(7), b.header())
	_, err = s.Unwrap(ctx, b.marshal())
	wantErr(t, err, seal.ErrBlob)
}

// TestRSAOAEPInterop: a blob made in Go with RSA-OAEP SHA-1 (what
// SoftHSM 2.6 supports) under the token's public key opens with the seal;
// so the documented parameters are the ones used.
func TestRSAOAEPInterop(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := generated(t, tokRSA, "root", MechanismRSAOAEPSHA1)
	own, err := s.Wrap(ctx, rootKey(9))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := parseBlob(own)
	pub := readRSAPublic(t, s)
	if pub.N.BitLen() != rsaGenerateBits {
		t.Fatalf("generated a %d-bit key", pub.N.BitLen())
	}
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, rootKey(10), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ciphertext = ct
	got, err := s.Unwrap(ctx, p.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rootKey(10)) {
		t.Fatal("another plaintext")
	}
	// A well-formed ciphertext of something that is not a 32-byte key.
	for _, n := range []int{0, 31, 33, 64} {
		p.ciphertext, err = rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, make([]byte, n), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err = s.Unwrap(ctx, p.marshal())
		if got != nil {
			t.Fatalf("a %d-byte value unwrapped", n)
		}
		wantErr(t, err, seal.ErrBlob)
	}
}

// TestSessionKeyTemplate: the object that carries the root key through
// C_WrapKey/C_UnwrapKey is a session object, never stored on the token.
func TestSessionKeyTemplate(t *testing.T) {
	want := map[uint][]byte{p11.CKA_TOKEN: {0}, p11.CKA_PRIVATE: {1}, p11.CKA_CLASS: p11.NewAttribute(0, p11.CKO_SECRET_KEY).Value}
	for _, a := range sessionKeyTemplate([]byte("v")) {
		if w, ok := want[a.Type]; ok {
			if !bytes.Equal(a.Value, w) {
				t.Errorf("attribute %#x is %x, want %x", a.Type, a.Value, w)
			}
			delete(want, a.Type)
		}
	}
	if len(want) != 0 {
		t.Errorf("attributes %v missing", want)
	}
}

// TestNoLeftoverObjects: aes-key-wrap-pad destroys the session objects
// that held the root key.
func TestNoLeftoverObjects(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := generated(t, tokKWP, "root", MechanismAESKeyWrapPad)
	data, err := s.Wrap(ctx, rootKey(26))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unwrap(ctx, data); err != nil {
		t.Fatal(err)
	}
	err = s.do(ctx, "test", func(sh p11.SessionHandle) error {
		c := s.mod.ctx
		if err := c.FindObjectsInit(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET)}); err != nil {
			return err
		}
		objs, _, err := c.FindObjects(sh, 10)
		c.FindObjectsFinal(sh)
		if len(objs) != 0 {
			t.Errorf("%d generic secret objects left", len(objs))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRSAOAEPSHA256: rsa-oaep is SHA-256; a token that refuses it (SoftHSM
// 2.6) is a configuration error that says what to use instead, and a token
// that supports it round-trips.
func TestRSAOAEPSHA256(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	sha1Seal := generated(t, tokRSA, "root", MechanismRSAOAEPSHA1)
	s := open(t, config(t, tokRSA, "root", MechanismRSAOAEP)) // the same key pair
	if err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := s.Wrap(ctx, rootKey(24))
	if err != nil {
		wantErr(t, err, seal.ErrMisconfigured)
		if !strings.Contains(err.Error(), "SHA-256") || !strings.Contains(err.Error(), MechanismRSAOAEPSHA1) {
			t.Fatalf("error %q does not explain", err)
		}
		t.Logf("this token has no RSA-OAEP SHA-256: %v", err)
	} else {
		got, err := s.Unwrap(ctx, data)
		if err != nil || !bytes.Equal(got, rootKey(24)) {
			t.Fatalf("unwrap: %v", err)
		}
		p, _ := parseBlob(data)
		if p.mech != mechRSAOAEP {
			t.Fatalf("blob mechanism %s", p.mech)
		}
	}
	// Blobs of one OAEP hash are refused by a seal of the other.
	other, err := sha1Seal.Wrap(ctx, rootKey(25))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Unwrap(ctx, other)
	wantErr(t, err, seal.ErrBlob)
}

// TestToolKey: a key made by the documented pkcs11-tool ceremony
// (generate_key false) works, and the blob records its CKA_ID.
func TestToolKey(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := open(t, config(t, tokTool, toolKey, MechanismAESGCM))
	if err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := s.Wrap(ctx, rootKey(11))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := parseBlob(data)
	if hex.EncodeToString(b.keyID) != toolKeyID {
		t.Fatalf("blob records key id %x, want %s", b.keyID, toolKeyID)
	}
	got, err := s.Unwrap(ctx, data)
	if err != nil || !bytes.Equal(got, rootKey(11)) {
		t.Fatalf("unwrap: %v", err)
	}

	r := open(t, config(t, tokTool, toolRSA, MechanismRSAOAEPSHA1))
	data, err = r.Wrap(ctx, rootKey(12))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.Unwrap(ctx, data); err != nil || !bytes.Equal(got, rootKey(12)) {
		t.Fatalf("rsa unwrap: %v", err)
	}
}

// TestUnprotectedKeys: keys whose secret is not confined to the token are
// refused, each with its reason.
func TestUnprotectedKeys(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	for label, why := range map[string]string{
		toolPublicKey:    "CKA_PRIVATE",
		toolExtractable:  "CKA_EXTRACTABLE",
		toolNotSensitive: "CKA_SENSITIVE",
	} {
		s := open(t, config(t, tokTool, label, MechanismAESGCM))
		err := s.Health(ctx)
		wantErr(t, err, seal.ErrMisconfigured)
		if !strings.Contains(err.Error(), why) {
			t.Errorf("%s: error %q does not name %s", label, err, why)
		}
		if _, err := s.Wrap(ctx, rootKey(12)); !errors.Is(err, seal.ErrMisconfigured) {
			t.Errorf("%s: wrap: %v", label, err)
		}
	}
}

// TestWrongPIN: a refused PIN is ErrMisconfigured, is not in the error, is
// not presented again, and a corrected PIN file is used at the next call.
func TestWrongPIN(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	wrong := "11223344"
	c := config(t, tokPIN, "root", MechanismAESGCM)
	c.GenerateKey = true
	if err := os.WriteFile(c.PINFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, c)
	before := loginCalls.Load()
	err := s.Health(ctx)
	wantErr(t, err, seal.ErrMisconfigured)
	if !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") || strings.Contains(err.Error(), wrong) {
		t.Fatalf("error %q", err)
	}
	if n := loginCalls.Load() - before; n != 1 {
		t.Fatalf("%d logins for one call", n)
	}
	for range 3 {
		_, err = s.Wrap(ctx, rootKey(13))
		wantErr(t, err, seal.ErrMisconfigured)
		if strings.Contains(err.Error(), wrong) {
			t.Fatalf("error %q holds the PIN", err)
		}
	}
	if n := loginCalls.Load() - before; n != 1 {
		t.Fatalf("the refused PIN was presented %d times", n)
	}
	// Fixed on disk: the next call logs in.
	if err := os.WriteFile(c.PINFile, []byte(testPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := s.Wrap(ctx, rootKey(13))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unwrap(ctx, data); err != nil {
		t.Fatal(err)
	}
	if n := loginCalls.Load() - before; n != 2 {
		t.Fatalf("%d logins", n)
	}
}

// TestPINSources: a PIN file others can read is refused before login;
// empty, missing and oversized PINs are refused; pin_env works.
func TestPINSources(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	c := config(t, tokGenerate, "pin-sources", MechanismAESGCM)
	c.GenerateKey = true
	for name, f := range map[string]func(string) error{
		"mode 0640": func(p string) error { return os.Chmod(p, 0o640) },
		"mode 0604": func(p string) error { return os.Chmod(p, 0o604) },
		"empty":     func(p string) error { return os.WriteFile(p, []byte("\n"), 0o600) },
		"missing":   func(p string) error { return os.Remove(p) },
		"too large": func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("1"), maxPINFile+1), 0o600) },
	} {
		cc := c
		cc.PINFile = pinFile(t, testPIN)
		if err := f(cc.PINFile); err != nil {
			t.Fatal(err)
		}
		s := open(t, cc)
		before := loginCalls.Load()
		err := s.Health(ctx)
		wantErr(t, err, seal.ErrMisconfigured)
		if loginCalls.Load() != before {
			t.Errorf("%s: logged in", name)
		}
		if !strings.Contains(err.Error(), cc.PINFile) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	// 0400 and a CRLF ending are fine.
	cc := c
	cc.PINFile = pinFile(t, testPIN)
	if err := os.WriteFile(cc.PINFile, []byte(testPIN+"\r\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := open(t, cc).EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COFFER_TEST_HSM_PIN", testPIN)
	ce := c
	ce.PINFile, ce.PINEnv = "", "COFFER_TEST_HSM_PIN"
	if err := open(t, ce).Health(ctx); err != nil {
		t.Fatal(err)
	}
	ce.PINEnv = "COFFER_TEST_HSM_PIN_UNSET"
	wantErr(t, open(t, ce).Health(ctx), seal.ErrMisconfigured)
}

// TestMissingKey: no key of the label is ErrMisconfigured; with
// generate_key, Health and Unwrap still do not create one, EnsureKey and
// Wrap do.
func TestMissingKey(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	for _, m := range mechanisms {
		t.Run(m.name, func(t *testing.T) {
			c := config(t, tokMissing, "absent-"+m.name, m.name)
			s := open(t, c)
			err := s.Health(ctx)
			wantErr(t, err, seal.ErrMisconfigured)
			if !strings.Contains(err.Error(), "absent-"+m.name) {
				t.Fatalf("error %q does not name the key", err)
			}
			_, err = s.Wrap(ctx, rootKey(14))
			wantErr(t, err, seal.ErrMisconfigured)
			blob := (&blob{mech: s.mech, keyLabel: c.KeyLabel, iv: make([]byte, map[bool]int{true: 12}[s.mech == mechAESGCM]),
				ciphertext: make([]byte, map[mechanism]int{mechAESGCM: 48, mechAESKWP: 40, mechRSAOAEPSHA1: 384}[s.mech])}).marshal()
			_, err = s.Unwrap(ctx, blob)
			wantErr(t, err, seal.ErrMisconfigured)

			c.GenerateKey = true
			g := open(t, c)
			wantErr(t, g.Health(ctx), seal.ErrMisconfigured)
			_, err = g.Unwrap(ctx, blob)
			wantErr(t, err, seal.ErrMisconfigured)
			wantErr(t, g.Health(ctx), seal.ErrMisconfigured) // still none
			data, err := g.Wrap(ctx, rootKey(15))            // Wrap generates
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Health(ctx); err != nil {
				t.Fatalf("the key Wrap generated: %v", err)
			}
			if err := g.EnsureKey(ctx); err != nil { // found, not generated again
				t.Fatal(err)
			}
			if got, err := s.Unwrap(ctx, data); err != nil || !bytes.Equal(got, rootKey(15)) {
				t.Fatalf("unwrap: %v", err)
			}
		})
	}
}

// TestGeneratedKeyAttributes: what generate_key makes is private,
// sensitive, non-extractable and allowed only its mechanism's use.
func TestGeneratedKeyAttributes(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	for _, m := range mechanisms {
		s := generated(t, tokGenerate, "attrs-"+m.name, m.name)
		err := s.do(ctx, "test", func(sh p11.SessionHandle) error {
			k, err := s.findKeys(sh, false, true)
			if err != nil {
				return err
			}
			o := k.key
			want := map[uint]bool{p11.CKA_TOKEN: true, p11.CKA_PRIVATE: true, p11.CKA_SENSITIVE: true, p11.CKA_EXTRACTABLE: false,
				p11.CKA_SIGN: false, p11.CKA_DERIVE: false}
			switch m.name {
			case MechanismAESGCM:
				want[p11.CKA_ENCRYPT], want[p11.CKA_DECRYPT], want[p11.CKA_WRAP], want[p11.CKA_UNWRAP] = true, true, false, false
			case MechanismAESKeyWrapPad:
				want[p11.CKA_ENCRYPT], want[p11.CKA_DECRYPT], want[p11.CKA_WRAP], want[p11.CKA_UNWRAP] = false, false, true, true
			case MechanismRSAOAEPSHA1:
				o = k.priv
				want[p11.CKA_DECRYPT], want[p11.CKA_UNWRAP] = true, false
			}
			for a, v := range want {
				got, err := s.flag(sh, o, a)
				if err != nil {
					return err
				}
				if got != v {
					t.Errorf("%s: attribute %#x is %v", m.name, a, got)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestTokenNotFound: an unknown token label or slot is ErrMisconfigured at
// first use (New does not touch the token).
func TestTokenNotFound(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := open(t, config(t, "no-such-token", "root", MechanismAESGCM))
	err := s.Health(ctx)
	wantErr(t, err, seal.ErrMisconfigured)
	if !strings.Contains(err.Error(), "no-such-token") || !strings.Contains(err.Error(), `"`+tokGCM+`"`) {
		t.Fatalf("error %q should name the label and the tokens there are", err)
	}
	slot := uint(987654)
	c := config(t, "", "other", MechanismAESGCM)
	c.Slot = &slot
	_, err = open(t, c).Unwrap(ctx, mustHex(t, vectorGCM))
	wantErr(t, err, seal.ErrBlob) // another key label: refused before any I/O
	c.KeyLabel = "root"
	wantErr(t, open(t, c).Health(ctx), seal.ErrMisconfigured)
}

// closeAllSessions closes every session of this process on the token, as
// an HSM restart does, through a second context of the same library.
func closeAllSessions(t *testing.T, s *Seal) {
	t.Helper()
	c := p11.New(hsmLib)
	if err := c.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatal(err)
	}
	if err := c.CloseAllSessions(s.slot); err != nil {
		t.Fatal(err)
	}
}

// TestReestablish: after the sessions are closed under it, or the library
// finalized under it, the seal opens a session, logs in and retries.
func TestReestablish(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := generated(t, tokReinit, "root", MechanismAESGCM)
	data, err := s.Wrap(ctx, rootKey(16))
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		before := loginCalls.Load()
		got, err := s.Unwrap(ctx, data)
		if err != nil {
			t.Fatalf("after %s: %v", what, err)
		}
		if !bytes.Equal(got, rootKey(16)) {
			t.Fatal("another key")
		}
		if loginCalls.Load()-before != 1 {
			t.Fatalf("after %s: %d logins", what, loginCalls.Load()-before)
		}
	}
	closeAllSessions(t, s)
	check("C_CloseAllSessions")

	c := p11.New(hsmLib)
	if err := c.Finalize(); err != nil {
		t.Fatal(err)
	}
	check("C_Finalize")

	// Logged out under it (C_Logout from another session of the process).
	err = s.do(ctx, "test", func(sh p11.SessionHandle) error { return s.mod.ctx.Logout(sh) })
	if err != nil {
		t.Fatal(err)
	}
	check("C_Logout")
}

// TestRetriesOnce: a fault that persists is retried once, not more.
func TestRetriesOnce(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := generated(t, tokReinit, "root", MechanismAESGCM)
	data, err := s.Wrap(ctx, rootKey(17))
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	testHookCall = func(op string) error {
		if op == "unwrap" {
			calls++
			return p11.Error(p11.CKR_DEVICE_REMOVED)
		}
		return nil
	}
	defer func() { testHookCall = nil }()
	_, err = s.Unwrap(ctx, data)
	if err == nil || !isCode(err, p11.CKR_DEVICE_REMOVED) || calls != 2 {
		t.Fatalf("unwrap ran %d times: %v", calls, err)
	}
	testHookCall = nil
	if _, err := s.Unwrap(ctx, data); err != nil {
		t.Fatal(err)
	}
}

// TestPanicRecovered: a panic in the binding is an error, and the seal
// works again afterwards.
func TestPanicRecovered(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := generated(t, tokFault, "panic", MechanismAESGCM)
	data, err := s.Wrap(ctx, rootKey(18))
	if err != nil {
		t.Fatal(err)
	}
	testHookCall = func(op string) error {
		if op == "unwrap" {
			panic("binding bug holding " + testPIN)
		}
		return nil
	}
	defer func() { testHookCall = nil }()
	_, err = s.Unwrap(ctx, data)
	var pe panicError
	if !errors.As(err, &pe) || strings.Contains(err.Error(), testPIN) {
		t.Fatalf("error %v", err)
	}
	testHookCall = nil
	if got, err := s.Unwrap(ctx, data); err != nil || !bytes.Equal(got, rootKey(18)) {
		t.Fatalf("after the panic: %v", err)
	}
}

// TestWrapVerifies: a public key that is not the private key's pair makes
// Wrap fail at once instead of leaving a blob nothing opens.
func TestWrapVerifies(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	s := open(t, config(t, tokFault, "mismatch", MechanismRSAOAEPSHA1))
	err := s.do(ctx, "test", func(sh p11.SessionHandle) error {
		c := s.mod.ctx
		rw, err := c.OpenSession(s.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer c.CloseSession(rw)
		var pubs, privs []p11.ObjectHandle
		for range 2 {
			pub, priv, err := c.GenerateKeyPair(rw, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
				[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, "mismatch"), p11.NewAttribute(p11.CKA_ID, []byte{9}),
					p11.NewAttribute(p11.CKA_ENCRYPT, true), p11.NewAttribute(p11.CKA_MODULUS_BITS, 2048), p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1})},
				[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, "mismatch"), p11.NewAttribute(p11.CKA_ID, []byte{9}),
					p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SENSITIVE, true), p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
					p11.NewAttribute(p11.CKA_DECRYPT, true)})
			if err != nil {
				return err
			}
			pubs, privs = append(pubs, pub), append(privs, priv)
		}
		if err := c.DestroyObject(rw, pubs[1]); err != nil {
			return err
		}
		return c.DestroyObject(rw, privs[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Wrap(ctx, rootKey(19))
	wantErr(t, err, seal.ErrMisconfigured)
	if !strings.Contains(err.Error(), "cannot open what it wrapped") {
		t.Fatalf("error %q", err)
	}
}

// TestWrapVerifiesValue: a token that opens the new blob to another value
// (faulty) fails Wrap.
func TestWrapVerifiesValue(t *testing.T) {
	needHSM(t)
	s := generated(t, tokFault, "verify", MechanismAESGCM)
	testHookVerify = func(b []byte) { b[31] ^= 1 }
	defer func() { testHookVerify = nil }()
	_, err := s.Wrap(testCtx(t), rootKey(27))
	wantErr(t, err, seal.ErrMisconfigured)
	if !strings.Contains(err.Error(), "another value") {
		t.Fatalf("error %q", err)
	}
}

// TestConcurrentUnwrap: 8 goroutines unwrap (and one wraps) at once.
func TestConcurrentUnwrap(t *testing.T) {
	needHSM(t)
	ctx := testCtx(t)
	for _, m := range mechanisms {
		t.Run(m.name, func(t *testing.T) {
			s := generated(t, m.token, "root", m.name)
			data, err := s.Wrap(ctx, rootKey(20))
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 9*20)
			for range 8 {
				wg.Go(func() {
					for range 20 {
						got, err := s.Unwrap(ctx, data)
						if err == nil && !bytes.Equal(got, rootKey(20)) {
							err = errors.New("another key")
						}
						if err != nil {
							errs <- err
						}
					}
				})
			}
			wg.Go(func() {
				for range 5 {
					if _, err := s.Wrap(ctx, rootKey(21)); err != nil {
						errs <- err
					}
				}
			})
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestCanceledAndClosed: a canceled context and a closed seal are errors;
// Close is idempotent.
func TestCanceledAndClosed(t *testing.T) {
	needHSM(t)
	s := generated(t, tokGCM, "root", MechanismAESGCM)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Wrap(context.Background(), rootKey(22)); err == nil {
		t.Fatal("wrapped after Close")
	}
}

// readRSAPublic reads the seal's RSA public key.
func readRSAPublic(t *testing.T, s *Seal) *rsa.PublicKey {
	var pub *rsa.PublicKey
	err := s.do(testCtx(t), "test", func(sh p11.SessionHandle) error {
		k, err := s.findKeys(sh, false, true)
		if err != nil {
			return err
		}
		a, err := s.mod.ctx.GetAttributeValue(sh, k.pub, []*p11.Attribute{p11.NewAttribute(p11.CKA_MODULUS, nil), p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return err
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(new(big.Int).SetBytes(a[1].Value).Int64())}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// BenchmarkUnwrap measures the unseal cost per mechanism on SoftHSM.
func BenchmarkUnwrap(b *testing.B) {
	needHSM(b)
	for _, m := range mechanisms {
		b.Run(m.name, func(b *testing.B) {
			ctx := context.Background()
			s := generated(b, m.token, "root", m.name)
			data, err := s.Wrap(ctx, rootKey(23))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Unwrap(ctx, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
