package keys_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/keys"
)

// TestGenerateDataKeyPair: every spec gives a PKCS #8 private key whose
// public half is the SubjectPublicKeyInfo returned, of the spec's size or
// curve, and whose encrypted copy opens to the same bytes with the
// context, and only with it.
func TestGenerateDataKeyPair(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{Alias: "alias/pairs"})
	ec := map[string]string{"app": "signer"}
	want := map[string]any{"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096,
		"ECC_NIST_P256": elliptic.P256(), "ECC_NIST_P384": elliptic.P384(), "ECC_NIST_P521": elliptic.P521()}
	if got := keys.KeyPairSpecs(); len(got) != len(want) {
		t.Fatalf("specs %v", got)
	}
	for _, spec := range keys.KeyPairSpecs() {
		start := time.Now()
		kp, err := e.svc.GenerateDataKeyPair(ctx, "alias/pairs", spec, ec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		t.Logf("%s: %s", spec, time.Since(start).Round(time.Millisecond))
		priv, err := x509.ParsePKCS8PrivateKey(kp.Private)
		if err != nil {
			t.Fatalf("%s: private key: %v", spec, err)
		}
		pub, err := x509.ParsePKIXPublicKey(kp.Public)
		if err != nil {
			t.Fatalf("%s: public key: %v", spec, err)
		}
		switch w := want[spec].(type) {
		case int:
			p, ok := priv.(*rsa.PrivateKey)
			if !ok || p.N.BitLen() != w || !p.PublicKey.Equal(pub) {
				t.Fatalf("%s: private %T of %d bits, public %T", spec, priv, p.N.BitLen(), pub)
			}
		case elliptic.Curve:
			p, ok := priv.(*ecdsa.PrivateKey)
			if !ok || p.Curve != w || !p.PublicKey.Equal(pub) {
				t.Fatalf("%s: private %T, public %T", spec, priv, pub)
			}
		}
		if kp.Sealed.KeyID != k.ID {
			t.Fatalf("%s: sealed under %s", spec, kp.Sealed.KeyID)
		}
		o, err := e.svc.Decrypt(ctx, kp.Sealed.Ciphertext, ec, "")
		if err != nil || !bytes.Equal(o.Plaintext, kp.Private) {
			t.Fatalf("%s: the encrypted private key opens to other bytes (%v)", spec, err)
		}
		if _, err := e.svc.Decrypt(ctx, kp.Sealed.Ciphertext, nil, ""); !errors.Is(err, keys.ErrInvalidCiphertext) {
			t.Fatalf("%s: opened without its context: %v", spec, err)
		}
	}
}

// TestGenerateDataKeyPairRefusals: an unknown spec, a missing key, and a
// disabled key are refused before any pair is made.
func TestGenerateDataKeyPairRefusals(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, keys.CreateRequest{})
	for _, spec := range []string{"", "RSA_1024", "ECC_SECG_P256K1", "rsa_2048", "SYMMETRIC_DEFAULT"} {
		if _, err := e.svc.GenerateDataKeyPair(ctx, k.ID, spec, nil); !errors.Is(err, keys.ErrInvalidArgument) {
			t.Errorf("spec %q: %v", spec, err)
		}
	}
	if _, err := e.svc.GenerateDataKeyPair(ctx, "alias/none", "ECC_NIST_P256", nil); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("missing key: %v", err)
	}
	if _, err := e.svc.Disable(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.GenerateDataKeyPair(ctx, k.ID, "ECC_NIST_P256", nil); !errors.Is(err, keys.ErrDisabled) {
		t.Errorf("disabled key: %v", err)
	}
}
