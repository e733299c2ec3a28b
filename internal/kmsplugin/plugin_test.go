package kmsplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/ciphertext"
)

// fakeCoffer is an in-memory Coffer: it makes ciphertexts in the real
// format (header naming key and version) around the plaintext, checks the
// purpose context and counts calls.
type fakeCoffer struct {
	mu       sync.Mutex
	keyID    string // current key behind the alias
	version  uint32 // primary version
	encErr   error
	decErr   error
	pad      int                                       // extra bytes appended to ciphertexts
	corrupt  bool                                      // Decrypt returns other bytes
	onEncryp func(ctx context.Context) (uint32, error) // optional hook: returns the version to use

	enc, dec atomic.Int64

	// bound is the encryption context each ciphertext was made with;
	// ciphertexts the fake did not make are bound to purpose.
	bound    map[string]map[string]string
	contexts []map[string]string // contexts of every Encrypt, in order
}

func newFakeCoffer() *fakeCoffer {
	return &fakeCoffer{keyID: uuid.NewString(), version: 1}
}

func (f *fakeCoffer) set(fn func(f *fakeCoffer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeCoffer) calls() int64 { return f.enc.Load() + f.dec.Load() }

func (f *fakeCoffer) Encrypt(ctx context.Context, req client.EncryptRequest) (*client.EncryptResponse, error) {
	f.enc.Add(1)
	f.mu.Lock()
	id, v, err, pad, hook := f.keyID, f.version, f.encErr, f.pad, f.onEncryp
	f.mu.Unlock()
	if hook != nil {
		if v, err = hook(ctx); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	if pv := req.Context[PurposeContextKey]; pv != PurposeContextValue && pv != HealthPurposeValue {
		return nil, fmt.Errorf("fake: wrong context %v", req.Context)
	}
	ct := fakeCiphertext(id, v, req.Plaintext, pad)
	f.mu.Lock()
	if f.bound == nil {
		f.bound = map[string]map[string]string{}
	}
	f.bound[string(ct)] = maps.Clone(req.Context)
	f.contexts = append(f.contexts, maps.Clone(req.Context))
	f.mu.Unlock()
	return &client.EncryptResponse{Ciphertext: ct, KeyID: id, KeyVersion: v}, nil
}

func (f *fakeCoffer) Decrypt(_ context.Context, req client.DecryptRequest) (*client.DecryptResponse, error) {
	f.dec.Add(1)
	f.mu.Lock()
	err, corrupt := f.decErr, f.corrupt
	want, ok := f.bound[string(req.Ciphertext)]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !ok {
		want = purpose
	}
	if !maps.Equal(req.Context, want) {
		return nil, &client.APIError{StatusCode: 400, Code: "invalid_ciphertext", Message: "context differs"}
	}
	p, perr := ciphertext.Parse(req.Ciphertext)
	if perr != nil {
		return nil, &client.APIError{StatusCode: 400, Code: "invalid_ciphertext", Message: perr.Error()}
	}
	out := bytes.Clone(p.Sealed[:len(p.Sealed)-ciphertext.TagSize])
	if corrupt {
		out = append(out, 'x')
	}
	return &client.DecryptResponse{Plaintext: out}, nil
}

// fakeCiphertext lays out header | nonce | plaintext | tag (+pad).
func fakeCiphertext(keyID string, version uint32, plaintext []byte, pad int) []byte {
	b := ciphertext.AppendHeader(nil, ciphertext.Header{KeyID: uuid.MustParse(keyID), KeyVersion: version})
	b = append(b, make([]byte, ciphertext.NonceSize)...)
	b = append(b, plaintext...)
	b = append(b, make([]byte, ciphertext.TagSize+pad)...)
	return b
}

// fakeClock is a settable Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestPlugin(f *fakeCoffer, clock *fakeClock, m *Metrics) *Plugin {
	cfg := Config{Coffer: f, Key: "alias/k8s", HealthInterval: 10 * time.Second, Timeout: time.Second,
		Logger: slog.New(slog.DiscardHandler), Metrics: m}
	if clock != nil {
		cfg.Now = clock.Now
	}
	return New(cfg)
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s containing %q", code, substr)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code || !strings.Contains(st.Message(), substr) {
		t.Fatalf("got %s %q; want %s containing %q", st.Code(), st.Message(), code, substr)
	}
}

func TestKeyIDFormat(t *testing.T) {
	t.Parallel()
	id := "0b9c2c1e-58a4-4f0e-9d2b-3c7e8a9f1d20"
	if got := KeyID(id, 7); got != id+":7" {
		t.Fatalf("KeyID = %q", got)
	}
	tests := []struct {
		name    string
		in      string
		wantID  string
		wantVer uint32
		wantErr string
	}{
		{"canonical", id + ":1", id, 1, ""},
		{"max version", id + ":4294967295", id, 4294967295, ""},
		{"version 0", id + ":0", "", 0, "bad version"},
		{"version overflow", id + ":4294967296", "", 0, "bad version"},
		{"negative version", id + ":-1", "", 0, "bad version"},
		{"plus sign", id + ":+1", "", 0, "bad version"},
		{"leading zero", id + ":01", "", 0, "canonical"},
		{"empty version", id + ":", "", 0, "bad version"},
		{"trailing colon part", id + ":1:2", "", 0, "bad version"},
		{"no colon", id, "", 0, "want <key id>:<version>"},
		{"empty", "", "", 0, "want <key id>:<version>"},
		{"alias not uuid", "alias/k8s:1", "", 0, "bad key id"},
		{"not uuid", "hello:1", "", 0, "bad key id"},
		{"upper case uuid", strings.ToUpper(id) + ":1", "", 0, "canonical"},
		{"braced uuid", "{" + id + "}:1", "", 0, "canonical"},
		{"uuid without dashes", strings.ReplaceAll(id, "-", "") + ":1", "", 0, "canonical"},
		{"over 1024 bytes", id + ":1" + strings.Repeat("0", 1024), "", 0, "want <key id>:<version>"},
		{"over 1024 bytes, long id", strings.Repeat("a", 2000) + ":1", "", 0, "want <key id>:<version>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gotID, gotVer, err := ParseKeyID(tc.in)
			if tc.wantErr == "" {
				if err != nil || gotID != tc.wantID || gotVer != tc.wantVer {
					t.Fatalf("ParseKeyID(%q) = %q, %d, %v", tc.in, gotID, gotVer, err)
				}
				if KeyID(gotID, gotVer) != tc.in {
					t.Fatalf("KeyID does not round trip %q", tc.in)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "was not made by the Coffer plugin") {
				t.Fatalf("ParseKeyID(%q) error = %v; want one containing %q", truncate(tc.in), err, tc.wantErr)
			}
			if len(err.Error()) > 250 {
				t.Fatalf("error message is %d bytes; the key_id should be truncated", len(err.Error()))
			}
		})
	}
	// A real key_id is far below the 1024-byte limit.
	if n := len(KeyID(id, ^uint32(0))); n > MaxKeyID || n != 47 {
		t.Fatalf("longest key_id is %d bytes", n)
	}
	if h := KeyIDHash(id + ":1"); len(h) != 64 || strings.Contains(h, id) {
		t.Fatalf("KeyIDHash = %q", h)
	}
}

// goodDecrypt returns a DecryptRequest the plugin made.
func goodDecrypt(t *testing.T, p *Plugin) *kmsservice.DecryptRequest {
	t.Helper()
	r, err := p.Encrypt(context.Background(), "uid", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations}
}

func TestDecryptValidation(t *testing.T) {
	t.Parallel()
	f := newFakeCoffer()
	p := newTestPlugin(f, nil, nil)
	good := goodDecrypt(t, p)
	if out, err := p.Decrypt(context.Background(), "uid", good); err != nil || string(out) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("Decrypt = %q, %v", out, err)
	}
	other := uuid.NewString()
	tests := []struct {
		name   string
		mutate func(r *kmsservice.DecryptRequest)
		want   string
	}{
		{"no annotations", func(r *kmsservice.DecryptRequest) { r.Annotations = nil }, "annotation version.coffer.dev is missing"},
		{"empty annotations", func(r *kmsservice.DecryptRequest) { r.Annotations = map[string][]byte{} }, "is missing"},
		{"wrong version", func(r *kmsservice.DecryptRequest) { r.Annotations = map[string][]byte{AnnotationVersion: []byte("2")} }, `annotation version.coffer.dev is "2"`},
		{"empty version", func(r *kmsservice.DecryptRequest) { r.Annotations = map[string][]byte{AnnotationVersion: nil} }, `is ""`},
		{"huge version value", func(r *kmsservice.DecryptRequest) {
			r.Annotations = map[string][]byte{AnnotationVersion: bytes.Repeat([]byte("9"), 10000)}
		}, "this plugin reads version 1"},
		{"extra annotation", func(r *kmsservice.DecryptRequest) { r.Annotations["other.example.com"] = []byte("x") }, `unexpected annotation "other.example.com"`},
		{"only a foreign annotation", func(r *kmsservice.DecryptRequest) {
			r.Annotations = map[string][]byte{"version.example.com": []byte("1")}
		}, "is missing"},
		{"empty ciphertext", func(r *kmsservice.DecryptRequest) { r.Ciphertext = nil }, "ciphertext of 0 bytes: want 1..1024"},
		{"ciphertext over 1024 bytes", func(r *kmsservice.DecryptRequest) { r.Ciphertext = make([]byte, 1025) }, "ciphertext of 1025 bytes"},
		{"garbage ciphertext", func(r *kmsservice.DecryptRequest) { r.Ciphertext = []byte("not a coffer ciphertext at all, no") }, "magic bytes"},
		{"truncated ciphertext", func(r *kmsservice.DecryptRequest) { r.Ciphertext = r.Ciphertext[:30] }, "truncated"},
		{"empty key_id", func(r *kmsservice.DecryptRequest) { r.KeyID = "" }, "was not made by the Coffer plugin"},
		{"unknown key_id format", func(r *kmsservice.DecryptRequest) { r.KeyID = "projects/x/keys/y" }, "was not made by the Coffer plugin"},
		{"key_id of another key", func(r *kmsservice.DecryptRequest) { r.KeyID = other + ":1" }, "does not match the ciphertext, which names key " + f.keyID + " version 1"},
		{"key_id of another version", func(r *kmsservice.DecryptRequest) { r.KeyID = f.keyID + ":2" }, "does not match the ciphertext"},
		{"ciphertext of another key", func(r *kmsservice.DecryptRequest) { r.Ciphertext = fakeCiphertext(other, 1, []byte("x"), 0) }, "does not match the ciphertext, which names key " + other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &kmsservice.DecryptRequest{Ciphertext: bytes.Clone(good.Ciphertext), KeyID: good.KeyID, Annotations: maps.Clone(good.Annotations)}
			tc.mutate(r)
			before := f.dec.Load()
			_, err := p.Decrypt(context.Background(), "uid", r)
			wantCode(t, err, codes.InvalidArgument, tc.want)
			if f.dec.Load() != before {
				t.Fatal("an invalid request reached Coffer")
			}
		})
	}
	// An all-empty request (what a nil gRPC message decodes to).
	_, err := p.Decrypt(context.Background(), "", &kmsservice.DecryptRequest{})
	wantCode(t, err, codes.InvalidArgument, "is missing")
}

func TestEncryptSizeLimits(t *testing.T) {
	t.Parallel()
	f := newFakeCoffer()
	p := newTestPlugin(f, nil, nil)
	ctx := context.Background()

	_, err := p.Encrypt(ctx, "uid", nil)
	wantCode(t, err, codes.InvalidArgument, "plaintext is empty")

	// The largest plaintext whose ciphertext fits.
	r, err := p.Encrypt(ctx, "uid", make([]byte, MaxPlaintext))
	if err != nil || len(r.Ciphertext) != MaxCiphertext {
		t.Fatalf("Encrypt(%d bytes): %d-byte ciphertext, %v", MaxPlaintext, len(r.Ciphertext), err)
	}
	// One more byte is refused before Coffer is called.
	before := f.enc.Load()
	_, err = p.Encrypt(ctx, "uid", make([]byte, MaxPlaintext+1))
	wantCode(t, err, codes.InvalidArgument, "exceed the KMS v2 limit of 1024 bytes")
	_, err = p.Encrypt(ctx, "uid", make([]byte, 1<<20))
	wantCode(t, err, codes.InvalidArgument, "at most 973 plaintext bytes")
	if f.enc.Load() != before {
		t.Fatal("an oversized plaintext reached Coffer")
	}
	// Should Coffer's format ever grow, an oversized ciphertext is still
	// never returned.
	f.set(func(f *fakeCoffer) { f.pad = 2000 })
	_, err = p.Encrypt(ctx, "uid", make([]byte, 32))
	wantCode(t, err, codes.InvalidArgument, "exceeds the KMS v2 limit of 1024")

	// Annotations have FQDN keys.
	f.set(func(f *fakeCoffer) { f.pad = 0 })
	r, err = p.Encrypt(ctx, "uid", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Annotations) != 1 || string(r.Annotations[AnnotationVersion]) != EnvelopeVersion || strings.Count(AnnotationVersion, ".") < 2 {
		t.Fatalf("annotations %v", r.Annotations)
	}
}

// apiErr is a Coffer API error with a code.
func apiErr(status int, code string) error {
	return &client.APIError{StatusCode: status, Code: code, Message: "msg for " + code, Method: "POST", Path: "/v1/kms/encrypt"}
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.1:1/v1/kms/encrypt",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	tests := []struct {
		err   error
		class string
		code  codes.Code
	}{
		{apiErr(409, "key_disabled"), "key_unusable", codes.FailedPrecondition},
		{apiErr(409, "key_pending_deletion"), "key_unusable", codes.FailedPrecondition},
		{apiErr(410, "key_deleted"), "key_unusable", codes.FailedPrecondition},
		{apiErr(404, "key_not_found"), "key_unusable", codes.FailedPrecondition},
		{apiErr(409, "invalid_key_state"), "key_unusable", codes.FailedPrecondition},
		{apiErr(401, "unauthenticated"), "auth", codes.PermissionDenied},
		{apiErr(403, "permission_denied"), "auth", codes.PermissionDenied},
		{apiErr(503, "sealed"), "sealed", codes.Unavailable},
		{apiErr(503, "not_initialized"), "sealed", codes.Unavailable},
		{apiErr(400, "invalid_ciphertext"), "invalid", codes.InvalidArgument},
		{apiErr(400, "invalid_request"), "invalid", codes.InvalidArgument},
		{apiErr(400, "plaintext_too_large"), "invalid", codes.InvalidArgument},
		{apiErr(500, "internal"), "server", codes.Internal},
		{&client.APIError{StatusCode: 502, Message: "response is not JSON"}, "server", codes.Internal},
		{refused, "unreachable", codes.Unavailable},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "unreachable", codes.Unavailable},
		{errors.New("dial tcp: connection refused"), "unreachable", codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			if got := errorClass(tc.err); got != tc.class {
				t.Fatalf("errorClass = %q, want %q", got, tc.class)
			}
			// Through Encrypt: the gRPC code and a message naming the cause.
			f := newFakeCoffer()
			f.encErr = tc.err
			p := newTestPlugin(f, nil, nil)
			_, err := p.Encrypt(context.Background(), "uid", []byte("seed"))
			wantCode(t, err, tc.code, "coffer encrypt: "+tc.err.Error())
			// Through the health check: Status fails, Health names the class.
			if err := p.Check(context.Background()); err == nil {
				t.Fatal("Check succeeded")
			}
			_, class, herr := p.Health()
			if class != tc.class || herr == nil || !strings.Contains(herr.Error(), tc.err.Error()) {
				t.Fatalf("Health = %q, %v", class, herr)
			}
			_, err = p.Status(context.Background())
			wantCode(t, err, codes.Unavailable, "health check with key alias/k8s failed")
		})
	}
}

func TestHealthTransitions(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	f := newFakeCoffer()
	p := newTestPlugin(f, clock, nil)
	ctx := context.Background()
	keyID1 := KeyID(f.keyID, 1)

	// Before the first check.
	_, err := p.Status(ctx)
	wantCode(t, err, codes.Unavailable, "no health check has run yet")
	if _, class, _ := p.Health(); class != "starting" {
		t.Fatalf("class before the first check %q", class)
	}

	// Healthy.
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := p.Status(ctx)
	if err != nil || st.Healthz != "ok" || st.Version != "v2" || st.KeyID != keyID1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}

	// Stale only after more than three intervals without a success.
	clock.Add(30 * time.Second)
	if _, err := p.Status(ctx); err != nil {
		t.Fatalf("Status at exactly 3 intervals: %v", err)
	}
	clock.Add(time.Second)
	_, err = p.Status(ctx)
	wantCode(t, err, codes.Unavailable, "the last successful health check was 31s ago")
	if k, class, err := p.Health(); class != "stale" || err == nil || k != keyID1 {
		t.Fatalf("Health when stale = %q, %q, %v", k, class, err)
	}

	// Fresh again.
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if _, class, err := p.Health(); class != "" || err != nil {
		t.Fatalf("Health after recovery = %q, %v", class, err)
	}

	// A failed round trip makes it unhealthy at once, keeping the key_id.
	f.set(func(f *fakeCoffer) { f.encErr = apiErr(409, "key_disabled") })
	if err := p.Check(ctx); err == nil {
		t.Fatal("Check with a disabled key succeeded")
	}
	_, err = p.Status(ctx)
	wantCode(t, err, codes.Unavailable, "key_disabled")
	if k, class, _ := p.Health(); class != "key_unusable" || k != keyID1 {
		t.Fatalf("Health with a disabled key = %q, %q", k, class)
	}

	// Decrypt half of the round trip failing, or returning other bytes.
	f.set(func(f *fakeCoffer) { f.encErr, f.decErr = nil, apiErr(503, "sealed") })
	if err := p.Check(ctx); err == nil {
		t.Fatal("Check with a failing decrypt succeeded")
	}
	if _, class, _ := p.Health(); class != "sealed" {
		t.Fatalf("class %q", class)
	}
	f.set(func(f *fakeCoffer) { f.decErr, f.corrupt = nil, true })
	if err := p.Check(ctx); err == nil || !strings.Contains(err.Error(), "different bytes") {
		t.Fatalf("Check with a corrupt round trip: %v", err)
	}
	f.set(func(f *fakeCoffer) { f.corrupt = false })
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}

	// Run checks at once and then every interval.
	clock2 := &fakeClock{now: time.Now()}
	f2 := newFakeCoffer()
	p2 := New(Config{Coffer: f2, Key: "k", HealthInterval: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), Now: clock2.Now})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p2.Run(runCtx); close(done) }()
	waitFor(t, 5*time.Second, "three health checks", func() error {
		if f2.enc.Load() < 3 {
			return errNotYet
		}
		return nil
	})
	cancel()
	<-done
}

func TestStatusNeverCallsCoffer(t *testing.T) {
	t.Parallel()
	f := newFakeCoffer()
	p := newTestPlugin(f, nil, NewMetrics())
	ctx := context.Background()
	// Unhealthy and healthy states alike.
	for range 100 {
		p.Status(ctx)
	}
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	before := f.calls()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if _, err := p.Status(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := f.calls() - before; n != 0 {
		t.Fatalf("8000 Status calls made %d Coffer calls", n)
	}
}

func TestKeyIDFollowsRotation(t *testing.T) {
	t.Parallel()
	f := newFakeCoffer()
	p := newTestPlugin(f, nil, nil)
	ctx := context.Background()
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	statusKeyID := func() string {
		st, err := p.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.KeyID
	}
	if got := statusKeyID(); got != KeyID(f.keyID, 1) {
		t.Fatalf("Status key_id %q", got)
	}

	// Coffer rotates; no health check yet. Encrypt returns the new version
	// and Status reports it from then on (one current key).
	f.set(func(f *fakeCoffer) { f.version = 2 })
	if got := statusKeyID(); got != KeyID(f.keyID, 1) {
		t.Fatalf("Status changed without any call: %q", got)
	}
	r, err := p.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID != KeyID(f.keyID, 2) || statusKeyID() != r.KeyID {
		t.Fatalf("Encrypt key_id %q, Status key_id %q", r.KeyID, statusKeyID())
	}
	// An answer naming an older version (a lagging replica) does not move
	// Status back...
	f.set(func(f *fakeCoffer) { f.version = 1 })
	if _, err := p.Encrypt(ctx, "uid", []byte("seed")); err != nil {
		t.Fatal(err)
	}
	if got := statusKeyID(); got != KeyID(f.keyID, 2) {
		t.Fatalf("Status went back to %q", got)
	}
	// ... and old versions still decrypt.
	old := fakeCiphertext(f.keyID, 1, []byte("old seed"), 0)
	if out, err := p.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: old, KeyID: KeyID(f.keyID, 1),
		Annotations: map[string][]byte{AnnotationVersion: []byte("1")}}); err != nil || string(out) != "old seed" {
		t.Fatalf("Decrypt of version 1: %q, %v", out, err)
	}

	// The alias moves to another key: that is a new key_id too.
	f.set(func(f *fakeCoffer) { f.keyID, f.version = uuid.NewString(), 1 })
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if got := statusKeyID(); got != KeyID(f.keyID, 1) {
		t.Fatalf("Status after the alias moved %q", got)
	}
}

// A health check whose Encrypt answered before a rotation must not undo the
// newer key_id an Encrypt recorded while the check was in flight.
func TestCheckDoesNotRegressKeyID(t *testing.T) {
	t.Parallel()
	f := newFakeCoffer()
	p := newTestPlugin(f, nil, nil)
	ctx := context.Background()
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	inCheck, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	f.set(func(f *fakeCoffer) {
		f.onEncryp = func(context.Context) (uint32, error) {
			if first.CompareAndSwap(false, true) {
				close(inCheck)
				<-release
				return 1, nil // the check's Encrypt ran before the rotation
			}
			return 2, nil
		}
	})
	checked := make(chan error, 1)
	go func() { checked <- p.Check(ctx) }()
	<-inCheck
	r, err := p.Encrypt(ctx, "uid", []byte("seed")) // after the rotation
	if err != nil || r.KeyID != KeyID(f.keyID, 2) {
		t.Fatalf("Encrypt: %v, %v", r, err)
	}
	close(release)
	if err := <-checked; err != nil {
		t.Fatal(err)
	}
	st, err := p.Status(ctx)
	if err != nil || st.KeyID != KeyID(f.keyID, 2) {
		t.Fatalf("Status after the racing check = %+v, %v; want the newer key_id", st, err)
	}
}

func TestMetricsAndHealthHandler(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)} // far from the real clock
	f := newFakeCoffer()
	m := NewMetrics()
	p := newTestPlugin(f, clock, m)
	var serving atomic.Bool
	serving.Store(true)
	h := HealthHandler(p, m, serving.Load)
	get := func(path string) (int, map[string]string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var body map[string]string
		json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	ctx := context.Background()

	if code, body := get("/readyz"); code != 503 || body["class"] != "starting" {
		t.Fatalf("/readyz before a check: %d %v", code, body)
	}
	if code, _ := get("/livez"); code != 200 {
		t.Fatalf("/livez %d", code)
	}
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/readyz"); code != 200 || body["key_id"] != KeyID(f.keyID, 1) {
		t.Fatalf("/readyz healthy: %d %v", code, body)
	}
	p.Status(ctx)
	p.Encrypt(ctx, "uid", []byte("seed"))
	p.Encrypt(ctx, "uid", nil)
	f.set(func(f *fakeCoffer) { f.encErr = apiErr(409, "key_disabled") })
	p.Check(ctx)
	p.Status(ctx)
	// Coffer down is a readiness problem, not a liveness one.
	if code, body := get("/readyz"); code != 503 || body["class"] != "key_unusable" || !strings.Contains(body["error"], "key_disabled") {
		t.Fatalf("/readyz with a disabled key: %d %v", code, body)
	}
	if code, _ := get("/livez"); code != 200 {
		t.Fatalf("/livez while Coffer fails: %d", code)
	}
	serving.Store(false)
	if code, _ := get("/livez"); code != 503 {
		t.Fatalf("/livez with the gRPC server stopped: %d", code)
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	value := func(series string) (float64, bool) {
		for _, line := range strings.Split(string(body), "\n") {
			if rest, ok := strings.CutPrefix(line, series+" "); ok {
				var v float64
				fmt.Sscanf(rest, "%g", &v)
				return v, true
			}
		}
		return 0, false
	}
	for series, want := range map[string]float64{
		`coffer_kms_plugin_operations_total{operation="encrypt",outcome="ok"}`:              1,
		`coffer_kms_plugin_operations_total{operation="encrypt",outcome="InvalidArgument"}`: 1,
		`coffer_kms_plugin_operations_total{operation="status",outcome="ok"}`:               1,
		// A failed Status is counted under its gRPC code, not "Unknown".
		`coffer_kms_plugin_operations_total{operation="status",outcome="Unavailable"}`:      1,
		`coffer_kms_plugin_key_id_info{key_id_hash="` + KeyIDHash(KeyID(f.keyID, 1)) + `"}`: 1,
		`coffer_kms_plugin_healthy`:                                               0,
		`coffer_kms_plugin_last_successful_health_check_timestamp_seconds`:        float64(clock.now.Unix()),
		`coffer_kms_plugin_operation_duration_seconds_count{operation="encrypt"}`: 2,
	} {
		if got, ok := value(series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if _, ok := value(`coffer_kms_plugin_operations_total{operation="status",outcome="Unknown"}`); ok {
		t.Error("a failed Status was counted as Unknown")
	}
	// Latencies are measured with the real clock, whatever Config.Now says.
	for _, op := range []string{"encrypt", "status"} {
		if v, ok := value(`coffer_kms_plugin_operation_duration_seconds_sum{operation="` + op + `"}`); !ok || v > 10 || v < 0 {
			t.Errorf("%s latency sum %v s (present %v): measured against Config.Now?", op, v, ok)
		}
	}
	if bytes.Contains(body, []byte(f.keyID)) {
		t.Error("/metrics shows the key_id itself")
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)

	t.Run("fresh path, mode 0600", func(t *testing.T) {
		path := filepath.Join(dir, "a.sock")
		ln, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("mode %v", fi.Mode())
		}
	})

	t.Run("stale socket removed", func(t *testing.T) {
		path := filepath.Join(dir, "b.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false) // a crashed plugin leaves its socket file
		old.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Fatal("the stale socket file is gone already")
		}
		ln, err := Listen(path)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		defer ln.Close()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dialing the new socket: %v", err)
		}
		c.Close()
	})

	t.Run("live socket refused", func(t *testing.T) {
		path := filepath.Join(dir, "c.sock")
		live, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		if ln, err := Listen(path); err == nil {
			ln.Close()
			t.Fatal("Listen took over a live socket")
		} else if !strings.Contains(err.Error(), "in use") {
			t.Fatalf("error %v", err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the live socket was broken: %v", err)
		}
		c.Close()
	})

	t.Run("regular file refused", func(t *testing.T) {
		path := filepath.Join(dir, "d.sock")
		os.WriteFile(path, []byte("precious"), 0o644)
		if ln, err := Listen(path); err == nil {
			ln.Close()
			t.Fatal("Listen replaced a regular file")
		} else if !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("error %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Fatal("the file was changed")
		}
	})

	t.Run("directory refused", func(t *testing.T) {
		path := filepath.Join(dir, "e.sock")
		os.Mkdir(path, 0o700)
		if ln, err := Listen(path); err == nil {
			ln.Close()
			t.Fatal("Listen replaced a directory")
		}
	})

	t.Run("missing directory", func(t *testing.T) {
		if ln, err := Listen(filepath.Join(dir, "nope", "f.sock")); err == nil {
			ln.Close()
			t.Fatal("Listen in a missing directory succeeded")
		}
	})
}

func TestSocketPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"unix:///var/run/coffer/kms.sock": "/var/run/coffer/kms.sock",
		"/tmp/kms.sock":                   "/tmp/kms.sock",
		"unix://":                         "",
		"tcp://127.0.0.1:1":               "",
		"":                                "",
	} {
		got, err := SocketPath(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("SocketPath(%q) = %q, %v", in, got, err)
		}
	}
}

// TestHealthProbeOwnContext checks that the health round trip never uses
// the seeds' encryption context (issue 13): a probe ciphertext, of a known
// plaintext, must not be a valid seed, and a policy can allow the probe
// apart from the seeds.
func TestHealthProbeOwnContext(t *testing.T) {
	t.Parallel()
	for _, cluster := range []string{"", "prod"} {
		f := newFakeCoffer()
		cfg := Config{Coffer: f, Key: "alias/k8s", Cluster: cluster, Logger: slog.New(slog.DiscardHandler)}
		p := New(cfg)
		if err := p.Check(context.Background()); err != nil {
			t.Fatalf("cluster %q: Check: %v", cluster, err)
		}
		if _, err := p.Encrypt(context.Background(), "uid", []byte("0123456789abcdef0123456789abcdef")); err != nil {
			t.Fatalf("cluster %q: Encrypt: %v", cluster, err)
		}
		f.mu.Lock()
		probe, seed := f.contexts[0], f.contexts[1]
		f.mu.Unlock()
		if probe[PurposeContextKey] != HealthPurposeValue {
			t.Errorf("cluster %q: the health probe used context %v, want purpose %s", cluster, probe, HealthPurposeValue)
		}
		if maps.Equal(probe, seed) {
			t.Errorf("cluster %q: the health probe and the seeds share the context %v", cluster, seed)
		}
		if seed[PurposeContextKey] != PurposeContextValue {
			t.Errorf("cluster %q: seed context %v", cluster, seed)
		}
	}
}

// TestSeedContextNamesCluster checks that a plugin with Config.Cluster
// binds the cluster into new seeds, that seeds wrapped before (without it)
// still decrypt, and that another cluster's seeds do not.
func TestSeedContextNamesCluster(t *testing.T) {
	t.Parallel()
	f := newFakeCoffer()
	mk := func(cluster string) *Plugin {
		return New(Config{Coffer: f, Key: "alias/k8s", Cluster: cluster, Logger: slog.New(slog.DiscardHandler)})
	}
	// The fake's ciphertexts are deterministic: a distinct seed per wrap
	// keeps their contexts apart.
	n := 0
	wrap := func(p *Plugin) (*kmsservice.DecryptRequest, []byte) {
		t.Helper()
		n++
		seed := []byte(fmt.Sprintf("seed %d 0123456789abcdef0123456789", n))
		r, err := p.Encrypt(context.Background(), "uid", seed)
		if err != nil {
			t.Fatal(err)
		}
		return &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations}, seed
	}
	legacy, prod, staging := mk(""), mk("prod"), mk("staging")

	prodSeed, seed := wrap(prod)
	f.mu.Lock()
	got := f.contexts[len(f.contexts)-1]
	f.mu.Unlock()
	if want := map[string]string{PurposeContextKey: PurposeContextValue, ClusterContextKey: "prod"}; !maps.Equal(got, want) {
		t.Fatalf("seed context %v, want %v", got, want)
	}
	if out, err := prod.Decrypt(context.Background(), "uid", prodSeed); err != nil || !bytes.Equal(out, seed) {
		t.Fatalf("prod seed with the prod plugin: %q, %v", out, err)
	}
	// A seed from before the cluster was bound still decrypts.
	oldSeed, seed := wrap(legacy)
	if out, err := prod.Decrypt(context.Background(), "uid", oldSeed); err != nil || !bytes.Equal(out, seed) {
		t.Fatalf("a seed wrapped without a cluster, with the prod plugin: %q, %v", out, err)
	}
	// Another cluster's seed does not.
	if _, err := staging.Decrypt(context.Background(), "uid", prodSeed); err == nil {
		t.Fatal("the staging plugin decrypted a prod seed")
	}
	// A plugin without a cluster does not open cluster-bound seeds.
	if _, err := legacy.Decrypt(context.Background(), "uid", prodSeed); err == nil {
		t.Fatal("a plugin without a cluster decrypted a prod seed")
	}
}
