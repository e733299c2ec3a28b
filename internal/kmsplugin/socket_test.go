package kmsplugin

// Bad input over the real unix socket and gRPC adapter, with a real Coffer
// server behind the plugin: every bad request gets a gRPC error whose code
// and message name the problem, and the plugin keeps serving.

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/ciphertext"
)

func TestSocketBadInput(t *testing.T) {
	t.Parallel()
	srv := startCoffer(t, shortTempDir(t), "127.0.0.1:0", "")
	c := newCofferClient(t, srv)
	ctx := context.Background()
	key, err := c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/k8s"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sp := servePlugin(t, Config{Coffer: c, Key: "alias/k8s", HealthInterval: time.Second})
	if fi, err := os.Stat(sp.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	kms := dialKMS(t, sp.Socket)

	seed := make([]byte, 32)
	rand.Read(seed)
	enc, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed, Uid: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if enc.KeyId != KeyID(key.ID, 1) || len(enc.Ciphertext) > MaxCiphertext {
		t.Fatalf("Encrypt: key_id %q, %d-byte ciphertext", enc.KeyId, len(enc.Ciphertext))
	}
	good := &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations, Uid: "u2"}
	if out, err := kms.Decrypt(ctx, good); err != nil || !bytes.Equal(out.Plaintext, seed) {
		t.Fatalf("Decrypt: %v", err)
	}

	// A ciphertext of the other Coffer key, made directly (without the
	// plugin's purpose context), under its own consistent key_id.
	foreign, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: other.ID, Plaintext: seed})
	if err != nil {
		t.Fatal(err)
	}
	// The same, with the purpose context but from another key: the plugin
	// accepts every key (an alias may move), Coffer decides.
	otherWithPurpose, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: other.ID, Plaintext: seed, Context: purpose})
	if err != nil {
		t.Fatal(err)
	}
	// A well-formed ciphertext naming a key Coffer does not have.
	ghost := uuid.New()
	ghostCT := append(ciphertext.AppendHeader(nil, ciphertext.Header{KeyID: ghost, KeyVersion: 1}), make([]byte, 60)...)
	tampered := bytes.Clone(enc.Ciphertext)
	tampered[len(tampered)-1] ^= 0x80
	garbage := make([]byte, 200)
	rand.Read(garbage)
	garbage[0] = 'x'

	ann := func() map[string][]byte { return map[string][]byte{AnnotationVersion: []byte(EnvelopeVersion)} }
	tests := []struct {
		name string
		req  *kmsapi.DecryptRequest
		code codes.Code
		msg  string
	}{
		{"empty request", &kmsapi.DecryptRequest{}, codes.InvalidArgument, "annotation version.coffer.dev is missing"},
		{"empty ciphertext", &kmsapi.DecryptRequest{KeyId: enc.KeyId, Annotations: ann()}, codes.InvalidArgument, "ciphertext of 0 bytes: want 1..1024"},
		{"oversized ciphertext", &kmsapi.DecryptRequest{Ciphertext: make([]byte, 1025), KeyId: enc.KeyId, Annotations: ann()}, codes.InvalidArgument, "ciphertext of 1025 bytes: want 1..1024"},
		{"huge ciphertext", &kmsapi.DecryptRequest{Ciphertext: make([]byte, 1<<20), KeyId: enc.KeyId, Annotations: ann()}, codes.InvalidArgument, "ciphertext of 1048576 bytes"},
		{"garbage ciphertext", &kmsapi.DecryptRequest{Ciphertext: garbage, KeyId: enc.KeyId, Annotations: ann()}, codes.InvalidArgument, "does not start with the Coffer magic bytes"},
		{"truncated ciphertext", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext[:40], KeyId: enc.KeyId, Annotations: ann()}, codes.InvalidArgument, "truncated"},
		{"tampered ciphertext", &kmsapi.DecryptRequest{Ciphertext: tampered, KeyId: enc.KeyId, Annotations: ann()}, codes.InvalidArgument, "coffer decrypt: invalid_ciphertext"},
		{"empty key_id", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, Annotations: ann()}, codes.InvalidArgument, `key_id "" was not made by the Coffer plugin`},
		{"unknown key_id", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: "projects/p/locations/l/keyRings/r/cryptoKeys/k", Annotations: ann()}, codes.InvalidArgument, "was not made by the Coffer plugin"},
		{"key_id over 1024 bytes", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: key.ID + ":1" + strings.Repeat("1", 2000), Annotations: ann()}, codes.InvalidArgument, "was not made by the Coffer plugin"},
		{"key_id version 0", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: key.ID + ":0", Annotations: ann()}, codes.InvalidArgument, "bad version"},
		{"key_id of a different key", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: KeyID(other.ID, 1), Annotations: ann()}, codes.InvalidArgument,
			fmt.Sprintf("does not match the ciphertext, which names key %s version 1", key.ID)},
		{"key_id of a later version", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: KeyID(key.ID, 2), Annotations: ann()}, codes.InvalidArgument, "does not match the ciphertext"},
		{"missing annotations", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId}, codes.InvalidArgument, "annotation version.coffer.dev is missing"},
		{"wrong annotation value", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: map[string][]byte{AnnotationVersion: []byte("v1")}}, codes.InvalidArgument, `is "v1"; this plugin reads version 1`},
		{"extra annotation", &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: map[string][]byte{AnnotationVersion: []byte("1"), "kms.example.com": nil}}, codes.InvalidArgument, `unexpected annotation "kms.example.com"`},
		{"Coffer ciphertext not made for Kubernetes", &kmsapi.DecryptRequest{Ciphertext: foreign.Ciphertext, KeyId: KeyID(foreign.KeyID, foreign.KeyVersion), Annotations: ann()}, codes.InvalidArgument, "invalid_ciphertext"},
		{"ciphertext of an unknown Coffer key", &kmsapi.DecryptRequest{Ciphertext: ghostCT, KeyId: KeyID(ghost.String(), 1), Annotations: ann()}, codes.FailedPrecondition, "key_not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kms.Decrypt(ctx, tc.req)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
	// Another key's seed made with the purpose context does decrypt: the
	// plugin accepts ciphertexts of any key so that moving the alias to a
	// new key leaves old data readable.
	if out, err := kms.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: otherWithPurpose.Ciphertext, KeyId: KeyID(other.ID, 1), Annotations: ann()}); err != nil || !bytes.Equal(out.Plaintext, seed) {
		t.Errorf("a purpose-bound ciphertext of another key: %v", err)
	}

	// Encrypt.
	_, err = kms.Encrypt(ctx, &kmsapi.EncryptRequest{})
	wantCode(t, err, codes.InvalidArgument, "the plaintext is empty")
	_, err = kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: make([]byte, 974)})
	wantCode(t, err, codes.InvalidArgument, "plaintext of 974 bytes is too large")
	_, err = kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: make([]byte, 100<<10)}) // above Coffer's own 64 KiB limit
	wantCode(t, err, codes.InvalidArgument, "plaintext of 102400 bytes is too large")
	// Above gRPC's 4 MiB message limit: refused by the transport.
	_, err = kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: make([]byte, 5<<20)})
	wantCode(t, err, codes.ResourceExhausted, "larger than max")

	// Status with an empty request; the plugin still serves everything.
	st, err := kms.Status(ctx, &kmsapi.StatusRequest{})
	if err != nil || st.Healthz != "ok" || st.Version != "v2" || st.KeyId != KeyID(key.ID, 1) {
		t.Fatalf("Status after bad input: %+v, %v", st, err)
	}
	if out, err := kms.Decrypt(ctx, good); err != nil || !bytes.Equal(out.Plaintext, seed) {
		t.Fatalf("Decrypt after bad input: %v", err)
	}
	// A new connection works too.
	kms2 := dialKMS(t, sp.Socket)
	if _, err := kms2.Status(ctx, &kmsapi.StatusRequest{}); err != nil {
		t.Fatal(err)
	}
}

// The key's lifecycle through the socket: disabled and pending deletion
// make Encrypt fail with FailedPrecondition at once and Status fail after
// the next health check; re-enabling recovers.
func TestSocketKeyStates(t *testing.T) {
	t.Parallel()
	srv := startCoffer(t, shortTempDir(t), "127.0.0.1:0", "")
	c := newCofferClient(t, srv)
	ctx := context.Background()
	key, err := c.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sp := servePlugin(t, Config{Coffer: c, Key: key.ID, HealthInterval: 50 * time.Millisecond})
	kms := dialKMS(t, sp.Socket)
	enc, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")})
	if err != nil {
		t.Fatal(err)
	}
	statusErr := func(want string) func() error {
		return func() error {
			_, err := kms.Status(ctx, &kmsapi.StatusRequest{})
			if want == "" {
				return err
			}
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
				return fmt.Errorf("Status error %v, want Unavailable with %q", err, want)
			}
			return nil
		}
	}
	for _, s := range []struct {
		name    string
		set     func() error
		restore func() error
		code    string
	}{
		{"disabled", func() error { _, err := c.DisableKey(ctx, key.ID); return err },
			func() error { _, err := c.EnableKey(ctx, key.ID); return err }, "key_disabled"},
		{"pending deletion", func() error {
			_, err := c.ScheduleKeyDeletion(ctx, key.ID, client.ScheduleDeletionRequest{PendingDays: 7})
			return err
		}, func() error {
			if _, err := c.CancelKeyDeletion(ctx, key.ID); err != nil {
				return err
			}
			_, err := c.EnableKey(ctx, key.ID) // a cancelled deletion may leave the key disabled
			if err != nil && strings.Contains(err.Error(), "invalid_key_state") {
				err = nil
			}
			return err
		}, "key_pending_deletion"},
	} {
		t.Run(s.name, func(t *testing.T) {
			if err := s.set(); err != nil {
				t.Fatal(err)
			}
			_, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("seed")})
			wantCode(t, err, codes.FailedPrecondition, s.code)
			waitFor(t, 5*time.Second, "Status fails", statusErr(s.code))
			_, class, _ := sp.P.Health()
			if class != "key_unusable" {
				t.Fatalf("health class %q", class)
			}
			_, err = kms.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations})
			t.Logf("Decrypt while %s: %v", s.name, err)
			if err := s.restore(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "Status recovers", statusErr(""))
			if _, err := kms.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// blockingCoffer holds every Encrypt until release is closed.
type blockingCoffer struct {
	*fakeCoffer
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingCoffer) Encrypt(ctx context.Context, req client.EncryptRequest) (*client.EncryptResponse, error) {
	if string(req.Plaintext) == "slow" {
		b.once.Do(func() { close(b.entered) })
		<-b.release
	}
	return b.fakeCoffer.Encrypt(ctx, req)
}

// GracefulStop (what `coffer kms-plugin` does on SIGTERM) finishes the
// calls in flight, refuses new ones and removes the socket file.
func TestSocketGracefulStop(t *testing.T) {
	t.Parallel()
	bc := &blockingCoffer{fakeCoffer: newFakeCoffer(), entered: make(chan struct{}), release: make(chan struct{})}
	sp := servePlugin(t, Config{Coffer: bc, Key: "k", HealthInterval: time.Hour})
	kms := dialKMS(t, sp.Socket)
	ctx := context.Background()
	if _, err := kms.Status(ctx, &kmsapi.StatusRequest{}); err != nil {
		t.Fatal(err)
	}

	type result struct {
		resp *kmsapi.EncryptResponse
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		r, err := kms.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: []byte("slow")})
		inflight <- result{r, err}
	}()
	<-bc.entered

	stopped := make(chan struct{})
	go func() { sp.GS.GracefulStop(); close(stopped) }()
	waitFor(t, 5*time.Second, "socket closed for new connections", func() error {
		if _, err := os.Stat(sp.Socket); err == nil {
			return errNotYet
		}
		return nil
	})
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a call in flight")
	case <-time.After(100 * time.Millisecond):
	}
	// A new client cannot connect.
	newConn := dialKMS(t, sp.Socket)
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := newConn.Status(sctx, &kmsapi.StatusRequest{}); err == nil {
		t.Fatal("a new connection was served during graceful stop")
	}

	close(bc.release)
	r := <-inflight
	if r.err != nil || len(r.resp.Ciphertext) == 0 {
		t.Fatalf("the in-flight Encrypt: %v", r.err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop did not return after the in-flight call finished")
	}
}
