package iam

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/storage"
)

// TestAccessKeySigned: a signed request is authenticated with the key's
// secret handed only to the verifier; the key's state is checked as for
// Basic authentication; the secret is in no view of the key; a key stored
// before signing secrets were kept cannot sign but still authenticates
// with Basic.
func TestAccessKeySigned(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "p", allowEncryptApp)
	ak, err := e.iam.CreateAccessKey(ctx, CreateAccessKeyRequest{Policies: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("127.0.0.1")
	var got string
	p, err := e.iam.AuthenticateAccessKeySigned(ak.ID, src, func(secret string) error { got = secret; return nil })
	if err != nil || p.ID != ak.ID || p.Kind != auth.KindAccessKey || got != ak.SecretAccessKey {
		t.Fatalf("signed authentication: %v %+v (secret handed over: %v)", err, p, got == ak.SecretAccessKey)
	}
	bad := errors.New("signature mismatch")
	_, err = e.iam.AuthenticateAccessKeySigned(ak.ID, src, func(string) error { return bad })
	var who *auth.AttributedError
	if !errors.Is(err, bad) || !errors.As(err, &who) || who.ID != ak.ID {
		t.Fatalf("a refused signature: %v", err)
	}

	// No view of the key holds the secret.
	v, _ := e.iam.GetAccessKey(ctx, ak.ID)
	b1, _ := json.Marshal(v)
	b2, _ := json.Marshal(e.iam.ListAccessKeys(ctx))
	if strings.Contains(string(b1)+string(b2), ak.SecretAccessKey) {
		t.Fatal("a view of the access key holds its secret")
	}

	// Disabled: refused even with a good signature.
	off := false
	if _, err := e.iam.UpdateAccessKey(ctx, ak.ID, UpdateAccessKeyRequest{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.iam.AuthenticateAccessKeySigned(ak.ID, src, func(string) error { return nil }); !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("a disabled key signing: %v", err)
	}

	// A key stored without a signing secret (created before they were kept).
	old, err := e.iam.CreateAccessKey(ctx, CreateAccessKeyRequest{Policies: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	ent, err := e.store.Get(ctx, accessKeyPath+old.ID)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(ent.Value, &rec); err != nil || rec["sigv4_secret"] != old.SecretAccessKey {
		t.Fatalf("the stored record's signing secret: %v", err)
	}
	delete(rec, "sigv4_secret")
	raw, _ := json.Marshal(rec)
	if err := e.store.Apply(ctx, storage.Put(accessKeyPath+old.ID, raw)); err != nil {
		t.Fatal(err)
	}
	fresh := New(e.store, e.tokens, e.keys, func() time.Time { return e.now })
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	called := false
	if _, err := fresh.AuthenticateAccessKeySigned(old.ID, src, func(string) error { called = true; return nil }); !errors.Is(err, auth.ErrUnauthenticated) ||
		!strings.Contains(err.Error(), "create a new access key") || called {
		t.Fatalf("a key without a signing secret: %v (verifier called: %v)", err, called)
	}
	if _, err := fresh.AuthenticateAccessKey(old.ID, old.SecretAccessKey, src); err != nil {
		t.Fatalf("Basic authentication of a key without a signing secret: %v", err)
	}
	if _, err := fresh.AuthenticateAccessKeySigned("cfak_not-an-id", src, func(string) error { return nil }); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a malformed id: %v", err)
	}
}
