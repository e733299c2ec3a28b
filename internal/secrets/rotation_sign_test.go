package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/storage"
)

// signedHook is a webhook that verifies each call with key (nil: records
// the header only) and answers ok only when the signature is valid.
type signedHook struct {
	srv     *httptest.Server
	now     func() time.Time
	mu      sync.Mutex
	key     []byte
	headers []string
	bodies  [][]byte
	verdict []error
}

func newSignedHook(t *testing.T, now func() time.Time) *signedHook {
	h := &signedHook{now: now}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(client.WebhookSignatureHeader)
		h.mu.Lock()
		err := client.VerifyWebhookSignature(h.key, sig, b, h.now(), 0)
		h.headers, h.bodies, h.verdict = append(h.headers, sig), append(h.bodies, b), append(h.verdict, err)
		h.mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *signedHook) setKey(k []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key = k
}

func (h *signedHook) last() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.headers) == 0 {
		return "", nil
	}
	return h.headers[len(h.headers)-1], h.verdict[len(h.verdict)-1]
}

// A webhook rotation gets a signing key when set, shown in that answer
// only; every call carries a signature the client verifier accepts; set
// again, the key is kept; rolled, the old key no longer verifies.
func TestWebhookCallsSigned(t *testing.T) {
	e := newEnv(t)
	h := newSignedHook(t, e.clk.now)
	e.put(t, "db", map[string]string{"password": "old-secret-value"})
	md, err := e.svc.SetRotation(ctx, "db", RotationConfig{Every: 30 * 24 * time.Hour, With: "webhook:" + h.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	key := md.Rotation.NewSigningKey
	if len(key) != SigningKeySize || md.Rotation.Unsigned {
		t.Fatalf("set answer: key of %d bytes, unsigned %v", len(key), md.Rotation.Unsigned)
	}
	if got := e.meta(t, e.svc, "db"); got.Rotation.NewSigningKey != nil || got.Rotation.Unsigned {
		t.Fatalf("a metadata read shows the key or calls it unsigned: %+v", got.Rotation)
	}
	h.setKey(key)
	if _, err := e.svc.Rotate(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if sig, verr := h.last(); sig == "" || verr != nil {
		t.Fatalf("call signature %q: %v", sig, verr)
	}

	// Set again (another period): the key stays, calls still verify.
	md, err = e.svc.SetRotation(ctx, "db", RotationConfig{Every: 7 * 24 * time.Hour, With: "webhook:" + h.srv.URL + "/v2"})
	if err != nil || md.Rotation.NewSigningKey != nil {
		t.Fatalf("set again: key %x, %v", md.Rotation.NewSigningKey, err)
	}
	if _, err := e.svc.Rotate(ctx, "db"); err != nil {
		t.Fatalf("rotation after set again: %v", err)
	}

	// Rolled: a new key, and the receiver still holding the old one
	// refuses the calls.
	md, err = e.svc.SetRotation(ctx, "db", RotationConfig{Every: 7 * 24 * time.Hour, With: "webhook:" + h.srv.URL, RollSigningKey: true})
	if err != nil || len(md.Rotation.NewSigningKey) != SigningKeySize || bytes.Equal(md.Rotation.NewSigningKey, key) {
		t.Fatalf("rolled: key %x, %v", md.Rotation.NewSigningKey, err)
	}
	if _, err := e.svc.Rotate(ctx, "db"); err == nil {
		t.Fatal("a call signed with the rolled key verified with the old one")
	}
	h.setKey(md.Rotation.NewSigningKey)
	e.clk.add(2 * time.Hour) // past the retry's backoff and the claim lease
	if res, err := e.svc.Rotate(ctx, "db"); err != nil || !res.Resumed {
		t.Fatalf("with the new key: %+v %v", res, err)
	}

	// A random: generator keeps no key; a webhook set after it gets a
	// new one.
	if md, err = e.svc.SetRotation(ctx, "db", RotationConfig{Every: 7 * 24 * time.Hour, With: "random:"}); err != nil || md.Rotation.NewSigningKey != nil {
		t.Fatalf("random: %v", err)
	}
	m, _, err := e.svc.load(ctx, "db")
	if err != nil || m.Rotation.SigningKey != nil {
		t.Fatalf("a random: rotation keeps a signing key: %v", err)
	}
	if md, err = e.svc.SetRotation(ctx, "db", RotationConfig{Every: 7 * 24 * time.Hour, With: "webhook:" + h.srv.URL}); err != nil || len(md.Rotation.NewSigningKey) != SigningKeySize {
		t.Fatalf("webhook after random: %v", err)
	}
}

// A webhook configuration stored before calls were signed (no key) keeps
// working: its calls go unsigned, the metadata says so, and setting the
// rotation again makes a key.
func TestUnsignedWebhookConfigKeepsWorking(t *testing.T) {
	e := newEnv(t)
	h := newSignedHook(t, e.clk.now)
	e.put(t, "db", map[string]string{"password": "old-secret-value"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	// As stored by an earlier release: no signing_key.
	if _, err := e.svc.update(ctx, "db", func(m *meta, _ time.Time) ([]storage.Op, error) {
		m.Rotation.SigningKey = nil
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	m, _, _ := e.svc.load(ctx, "db")
	raw, _ := json.Marshal(m.Rotation)
	if bytes.Contains(raw, []byte("signing_key")) {
		t.Fatalf("the legacy record still has a key: %s", raw)
	}
	if md := e.meta(t, e.svc, "db"); !md.Rotation.Unsigned {
		t.Fatal("the metadata does not say the calls are unsigned")
	}
	_, _ = e.svc.Rotate(ctx, "db")
	if sig, _ := h.last(); sig != "" {
		t.Fatalf("a call without a key carries a signature %q", sig)
	}
	md, err := e.svc.SetRotation(ctx, "db", RotationConfig{Every: 30 * 24 * time.Hour, With: "webhook:" + h.srv.URL})
	if err != nil || len(md.Rotation.NewSigningKey) != SigningKeySize || md.Rotation.Unsigned {
		t.Fatalf("set again over a legacy configuration: %+v %v", md.Rotation, err)
	}
}

// Asking to roll the signing key of a random: rotation (which has none) is
// refused, not ignored: the caller believes a key was replaced.
func TestRollSigningKeyNeedsWebhook(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old-secret-value"})
	_, err := e.svc.SetRotation(ctx, "db", RotationConfig{Every: 30 * 24 * time.Hour, With: "random:", RollSigningKey: true})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "signing key") {
		t.Fatalf("roll with random: %v", err)
	}
	if md := e.meta(t, e.svc, "db"); md.Rotation != nil {
		t.Fatalf("the refused set configured a rotation: %+v", md.Rotation)
	}
}

// Two first sets at once: the one that loses the write retries, finds the
// winner's key and keeps it, and its answer shows no key (not the one it
// made on its lost attempt, which no call would ever be signed with).
func TestSetRotationConcurrentFirstSetsOneKey(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old-secret-value"})
	hs := &hookStore{Store: e.bar}
	loser := New(hs, e.keys, WithClock(e.clk.now))
	var won []byte
	hs.before = func() {
		md, err := e.svc.SetRotation(ctx, "db", RotationConfig{Every: 30 * 24 * time.Hour, With: "webhook:http://127.0.0.1:9/a"})
		if err != nil {
			t.Error(err)
			return
		}
		won = md.Rotation.NewSigningKey
	}
	md, err := loser.SetRotation(ctx, "db", RotationConfig{Every: 7 * 24 * time.Hour, With: "webhook:http://127.0.0.1:9/b"})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := e.svc.load(ctx, "db")
	if err != nil || len(won) != SigningKeySize || !bytes.Equal(m.Rotation.SigningKey, won) {
		t.Fatalf("stored key is not the winner's: %v", err)
	}
	if md.Rotation.NewSigningKey != nil {
		t.Fatal("the retried set answered a key that was never stored")
	}
}
