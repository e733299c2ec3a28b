package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// fakeKMS answers the KMS routes with fixed JSON and records what it got.
type fakeKMS struct {
	mu       sync.Mutex
	hits     map[string]int
	problems []string
	protos   map[int]int
	auth     map[string]int

	// failEvery makes every n-th request of the loaded route answer 500
	// (1: all of them).
	failEvery int64
	n         atomic.Int64
	// itemError makes batch answers carry a failed item.
	itemError bool
	// wantKey, wantPayload and wantBatch are what request bodies must hold.
	wantKey     string
	wantPayload int
	wantBatch   int
}

func newFakeKMS(t *testing.T) *fakeKMS {
	return &fakeKMS{hits: map[string]int{}, protos: map[int]int{}, auth: map[string]int{}}
}

func (f *fakeKMS) problem(format string) {
	f.mu.Lock()
	f.problems = append(f.problems, format)
	f.mu.Unlock()
}

func (f *fakeKMS) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) > 0 {
		t.Fatalf("server saw %d bad requests, first: %s", len(f.problems), f.problems[0])
	}
}

func (f *fakeKMS) authCount(h string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auth[h]
}

func (f *fakeKMS) protoCount(major int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.protos[major]
}

func (f *fakeKMS) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[path]
}

var fakeCiphertext = []byte("coffer-fake-ciphertext")

func (f *fakeKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hits[r.URL.Path]++
	f.protos[r.ProtoMajor]++
	f.auth[r.Header.Get("Authorization")]++
	f.mu.Unlock()
	if r.Method != http.MethodPost {
		f.problem("method " + r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.problem("content type " + ct)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.problem("reading body: " + err.Error())
		return
	}
	if r.ContentLength != int64(len(body)) {
		f.problem("content length mismatch")
	}
	if f.failEvery > 0 {
		if n := f.n.Add(1); n%f.failEvery == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(client.ErrorBody{Error: client.Error{Code: "internal", Message: "boom"}})
			return
		}
	}
	var out any
	switch r.URL.Path {
	case "/v1/kms/encrypt":
		var req client.EncryptRequest
		f.decode(body, &req)
		if req.KeyID != f.wantKey || len(req.Plaintext) != f.wantPayload {
			f.problem("encrypt: key " + req.KeyID + ", payload of wrong size")
		}
		out = client.EncryptResponse{Ciphertext: fakeCiphertext, KeyID: req.KeyID, KeyVersion: 1}
	case "/v1/kms/decrypt":
		var req client.DecryptRequest
		f.decode(body, &req)
		if !bytes.Equal(req.Ciphertext, fakeCiphertext) {
			f.problem("decrypt: wrong ciphertext")
		}
		out = client.DecryptResponse{Plaintext: make([]byte, f.wantPayload), KeyID: f.wantKey, KeyVersion: 1}
	case "/v1/kms/encrypt-batch":
		var req client.BatchEncryptRequest
		f.decode(body, &req)
		if req.KeyID != f.wantKey || len(req.Items) != f.wantBatch {
			f.problem("encrypt-batch: wrong key or item count")
		}
		res := client.BatchEncryptResponse{Results: make([]client.BatchEncryptResult, len(req.Items))}
		for i, it := range req.Items {
			if len(it.Plaintext) != f.wantPayload {
				f.problem("encrypt-batch: payload of wrong size")
			}
			res.Results[i].Ciphertext = fakeCiphertext
			res.Results[i].KeyID = req.KeyID
		}
		if f.itemError && len(res.Results) > 0 {
			last := len(res.Results) - 1
			res.Results[last] = client.BatchEncryptResult{Error: &client.Error{Code: "key_disabled", Message: "key is disabled"}}
		}
		out = res
	case "/v1/kms/decrypt-batch":
		var req client.BatchDecryptRequest
		f.decode(body, &req)
		if len(req.Items) != f.wantBatch {
			f.problem("decrypt-batch: wrong item count")
		}
		res := client.BatchDecryptResponse{Results: make([]client.BatchDecryptResult, len(req.Items))}
		for i, it := range req.Items {
			if !bytes.Equal(it.Ciphertext, fakeCiphertext) {
				f.problem("decrypt-batch: wrong ciphertext")
			}
			res.Results[i].Plaintext = make([]byte, f.wantPayload)
		}
		out = res
	case "/v1/kms/datakey":
		var req client.DataKeyRequest
		f.decode(body, &req)
		if req.KeyID != f.wantKey || req.Bytes != f.wantPayload {
			f.problem("datakey: wrong key or size")
		}
		out = client.DataKeyResponse{Plaintext: make([]byte, req.Bytes), Ciphertext: fakeCiphertext, KeyID: req.KeyID}
	case "/v1/kms/random":
		var req client.RandomRequest
		f.decode(body, &req)
		if req.Bytes != f.wantPayload {
			f.problem("random: wrong size")
		}
		out = client.RandomResponse{Random: make([]byte, req.Bytes)}
	case "/v1/keys":
		var req client.CreateKeyRequest
		f.decode(body, &req)
		if req.Description != "coffer bench" {
			f.problem("keys: description " + req.Description)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(client.Key{ID: "key-123", State: client.KeyEnabled})
		return
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (f *fakeKMS) decode(body []byte, v any) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.problem("decoding body: " + err.Error())
	}
}

func checkLatency(t *testing.T, l Latency) {
	t.Helper()
	order := []time.Duration{l.Min, l.P50, l.P90, l.P99, l.P999, l.Max}
	if l.Min <= 0 {
		t.Errorf("min latency %v, want > 0", l.Min)
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Errorf("latencies out of order: %+v", l)
		}
	}
	if l.Mean < l.Min || l.Mean > l.Max {
		t.Errorf("mean %v outside [min, max]: %+v", l.Mean, l)
	}
}

func TestEncryptCountsAndPayload(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k1", 100
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL + "/", Token: "s3cret", Op: OpEncrypt, KeyID: "k1",
		PayloadSize: 100, Concurrency: 8, Requests: 500,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 500 || res.Items != 500 || res.Errors != 0 {
		t.Fatalf("ops %d items %d errors %d (%s), want 500 500 0", res.Ops, res.Items, res.Errors, res.FirstError)
	}
	if got := f.count("/v1/kms/encrypt"); got != 500 {
		t.Errorf("server saw %d encrypts, want 500", got)
	}
	if f.authCount("Bearer s3cret") != 500 {
		t.Errorf("authorization headers: %v", f.auth)
	}
	if res.Target != srv.URL || res.Protocol != "HTTP/1.1" || res.Concurrency != 8 || res.PayloadSize != 100 || res.BatchSize != 0 {
		t.Errorf("result header: %+v", res)
	}
	if res.OpsPerSec <= 0 || res.ItemsPerSec != res.OpsPerSec || res.Elapsed <= 0 {
		t.Errorf("rates: %+v", res)
	}
	checkLatency(t, res.Latency)
}

func TestDefaultPayloadSizeAndNoToken(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "alias/app", DefaultPayloadSize
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "alias/app", Requests: 10})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Op != OpEncrypt || res.Ops != 10 || res.Concurrency != DefaultConcurrency || res.PayloadSize != DefaultPayloadSize {
		t.Fatalf("result: %+v", res)
	}
	if f.authCount("") != 10 {
		t.Errorf("authorization headers: %v", f.auth)
	}
}

func TestRequestsLimitIsExact(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 16
	srv := httptest.NewServer(f)
	defer srv.Close()

	total := 0
	for _, tc := range []struct {
		conc int
		n    int64
	}{{1, 7}, {8, 3}, {8, 1000}, {13, 997}, {64, 2000}} {
		res, err := Run(context.Background(), Config{
			Target: srv.URL, KeyID: "k", PayloadSize: 16, Concurrency: tc.conc, Requests: tc.n, Duration: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		total += int(tc.n)
		if res.Ops != tc.n || res.Errors != 0 {
			t.Errorf("c=%d n=%d: ops %d errors %d", tc.conc, tc.n, res.Ops, res.Errors)
		}
		if got := f.count("/v1/kms/encrypt"); got != total {
			t.Errorf("c=%d n=%d: server saw %d requests in all, want %d", tc.conc, tc.n, got, total)
		}
	}
	f.check(t)
}

func TestErrorsAreCounted(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	f.failEvery = 1
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "k", Concurrency: 4, Requests: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 0 || res.Errors != 200 || res.Items != 0 {
		t.Fatalf("ops %d errors %d items %d, want 0 200 0", res.Ops, res.Errors, res.Items)
	}
	for _, want := range []string{"/v1/kms/encrypt", "500", "internal", "boom"} {
		if !strings.Contains(res.FirstError, want) {
			t.Errorf("first error %q lacks %q", res.FirstError, want)
		}
	}
	if res.Latency != (Latency{}) {
		t.Errorf("latency of failures recorded: %+v", res.Latency)
	}
}

func TestSomeErrors(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	f.failEvery = 4
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "k", Concurrency: 6, Requests: 400})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 300 || res.Errors != 100 {
		t.Fatalf("ops %d errors %d, want 300 100", res.Ops, res.Errors)
	}
	checkLatency(t, res.Latency)
}

func TestTransportErrorsAreCounted(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more

	res, err := Run(context.Background(), Config{Target: url, KeyID: "k", Concurrency: 2, Requests: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 0 || res.Errors != 20 || !strings.Contains(res.FirstError, "refused") {
		t.Fatalf("ops %d errors %d first %q", res.Ops, res.Errors, res.FirstError)
	}
}

// writeCA writes the test server's certificate as a PEM file.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTLSWithCAFileUsesHTTP2(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 64
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL, KeyID: "k", PayloadSize: 64, Concurrency: 16, Requests: 300, CAFile: writeCA(t, srv),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 300 || res.Errors != 0 {
		t.Fatalf("ops %d errors %d (%s)", res.Ops, res.Errors, res.FirstError)
	}
	if res.Protocol != "HTTP/2.0" || f.protoCount(2) != 300 {
		t.Errorf("protocol %q, server saw %v", res.Protocol, f.protos)
	}
}

func TestTLSHTTP1(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "k", Concurrency: 4, Requests: 40, CAFile: writeCA(t, srv), HTTP1: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 40 || res.Protocol != "HTTP/1.1" || f.protoCount(1) != 40 {
		t.Fatalf("ops %d protocol %q, server saw %v (%s)", res.Ops, res.Protocol, f.protos, res.FirstError)
	}
}

func TestTLSInsecureSkipVerify(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "k", Requests: 50, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 50 || res.Protocol != "HTTP/2.0" {
		t.Fatalf("ops %d protocol %q (%s)", res.Ops, res.Protocol, res.FirstError)
	}
}

func TestTLSUntrustedFails(t *testing.T) {
	srv := httptest.NewTLSServer(newFakeKMS(t))
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "k", Concurrency: 2, Requests: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 0 || res.Errors != 4 || !strings.Contains(res.FirstError, "certificate") {
		t.Fatalf("ops %d errors %d first %q", res.Ops, res.Errors, res.FirstError)
	}
}

func TestDecryptPreparesCiphertext(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 48
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL, Op: OpDecrypt, KeyID: "k", PayloadSize: 48, Concurrency: 4, Requests: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 100 || res.Errors != 0 {
		t.Fatalf("ops %d errors %d (%s)", res.Ops, res.Errors, res.FirstError)
	}
	if e, d := f.count("/v1/kms/encrypt"), f.count("/v1/kms/decrypt"); e != 1 || d != 100 {
		t.Errorf("server saw %d encrypts and %d decrypts, want 1 and 100", e, d)
	}
}

func TestDecryptSetupFailureIsAnError(t *testing.T) {
	f := newFakeKMS(t)
	f.failEvery = 1
	srv := httptest.NewServer(f)
	defer srv.Close()

	_, err := Run(context.Background(), Config{Target: srv.URL, Op: OpDecrypt, KeyID: "k", Requests: 10})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err %v, want the setup failure", err)
	}
	if f.count("/v1/kms/decrypt") != 0 {
		t.Error("decrypt load ran after a failed setup")
	}
}

func TestEncryptBatch(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload, f.wantBatch = "k", 20, 10
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL, Op: OpEncryptBatch, KeyID: "k", PayloadSize: 20, BatchSize: 10, Concurrency: 4, Requests: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 50 || res.Items != 500 || res.Errors != 0 || res.BatchSize != 10 {
		t.Fatalf("ops %d items %d errors %d batch %d (%s)", res.Ops, res.Items, res.Errors, res.BatchSize, res.FirstError)
	}
	if res.ItemsPerSec < 9.99*res.OpsPerSec {
		t.Errorf("items/s %f vs ops/s %f", res.ItemsPerSec, res.OpsPerSec)
	}
}

func TestEncryptBatchDefaultSize(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload, f.wantBatch = "k", DefaultPayloadSize, DefaultBatchSize
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, Op: OpEncryptBatch, KeyID: "k", Requests: 40})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 40 || res.Items != 40*DefaultBatchSize {
		t.Fatalf("ops %d items %d (%s)", res.Ops, res.Items, res.FirstError)
	}
}

func TestBatchItemErrorsAreCounted(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload, f.wantBatch = "k", 8, 5
	f.itemError = true
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL, Op: OpEncryptBatch, KeyID: "k", PayloadSize: 8, BatchSize: 5, Concurrency: 2, Requests: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 0 || res.Errors != 30 || !strings.Contains(res.FirstError, "item 4 of 5") || !strings.Contains(res.FirstError, "key_disabled") {
		t.Fatalf("ops %d errors %d first %q", res.Ops, res.Errors, res.FirstError)
	}
}

func TestDecryptBatch(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload, f.wantBatch = "k", 32, 7
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL, Op: OpDecryptBatch, KeyID: "k", BatchSize: 7, Concurrency: 3, Requests: 21,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 21 || res.Items != 147 || f.count("/v1/kms/encrypt") != 1 {
		t.Fatalf("ops %d items %d encrypts %d (%s)", res.Ops, res.Items, f.count("/v1/kms/encrypt"), res.FirstError)
	}
}

func TestDataKeyAndRandom(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 64
	srv := httptest.NewServer(f)
	defer srv.Close()

	for _, op := range []Op{OpDataKey, OpRandom} {
		key := "k"
		if op == OpRandom {
			key = "" // random needs no key
		}
		res, err := Run(context.Background(), Config{Target: srv.URL, Op: op, KeyID: key, PayloadSize: 64, Concurrency: 3, Requests: 30})
		if err != nil {
			t.Fatal(err)
		}
		if res.Ops != 30 || res.Errors != 0 || f.count(op.Route()) != 30 {
			t.Errorf("%s: ops %d errors %d server %d (%s)", op, res.Ops, res.Errors, f.count(op.Route()), res.FirstError)
		}
	}
	f.check(t)
}

func TestDurationBound(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{Target: srv.URL, KeyID: "k", Concurrency: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops == 0 || res.Errors != 0 {
		t.Fatalf("ops %d errors %d (%s)", res.Ops, res.Errors, res.FirstError)
	}
	if res.Elapsed < 300*time.Millisecond || res.Elapsed > 5*time.Second {
		t.Errorf("elapsed %v for a 300ms run", res.Elapsed)
	}
	if got := f.count("/v1/kms/encrypt"); int64(got) != res.Ops {
		t.Errorf("server saw %d, result says %d", got, res.Ops)
	}
}

func TestWarmupIsNotCounted(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	srv := httptest.NewServer(f)
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Target: srv.URL, KeyID: "k", Concurrency: 4, Requests: 50, Warmup: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if res.Ops != 50 {
		t.Fatalf("ops %d, want 50", res.Ops)
	}
	if got := f.count("/v1/kms/encrypt"); got <= 50 {
		t.Errorf("server saw %d requests; the warmup sent none", got)
	}
}

func TestCancelReturnsPartialResult(t *testing.T) {
	f := newFakeKMS(t)
	f.wantKey, f.wantPayload = "k", 32
	srv := httptest.NewServer(f)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{Target: srv.URL, KeyID: "k", Concurrency: 4, Duration: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("cancel took %v", time.Since(start))
	}
	if res.Ops == 0 || res.Errors != 0 || res.FirstError != "" {
		t.Errorf("ops %d errors %d (%q): cancelled requests must not count as errors", res.Ops, res.Errors, res.FirstError)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown op", Config{Target: "http://127.0.0.1:1", Op: "sign", KeyID: "k"}, "unknown op"},
		{"no key", Config{Target: "http://127.0.0.1:1", Op: OpEncrypt}, "needs a key"},
		{"no target", Config{KeyID: "k"}, "no target"},
		{"bad scheme", Config{Target: "ftp://127.0.0.1:1", KeyID: "k"}, "scheme"},
		{"no host", Config{Target: "http://", KeyID: "k"}, "no host"},
		{"random too big", Config{Target: "http://127.0.0.1:1", Op: OpRandom, PayloadSize: 2048}, "1..1024"},
		{"negative payload", Config{Target: "http://127.0.0.1:1", KeyID: "k", PayloadSize: -1}, "payload size"},
		{"negative batch", Config{Target: "http://127.0.0.1:1", Op: OpEncryptBatch, KeyID: "k", BatchSize: -3}, "batch size"},
		{"negative concurrency", Config{Target: "http://127.0.0.1:1", KeyID: "k", Concurrency: -1}, "concurrency"},
		{"negative duration", Config{Target: "http://127.0.0.1:1", KeyID: "k", Duration: -time.Second}, "negative"},
		{"missing CA file", Config{Target: "https://127.0.0.1:1", KeyID: "k", CAFile: "/nonexistent/ca.pem"}, "CA file"},
	} {
		_, err := Run(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestCreateKey(t *testing.T) {
	f := newFakeKMS(t)
	srv := httptest.NewServer(f)
	defer srv.Close()

	key, err := CreateKey(context.Background(), Config{Target: srv.URL, Token: "t"}, client.CreateKeyRequest{Description: "coffer bench"})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if key.ID != "key-123" || f.authCount("Bearer t") != 1 {
		t.Fatalf("key %+v, auth %v", key, f.auth)
	}

	// A server that answers without a key id is an error.
	odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{}`)) }))
	defer odd.Close()
	if _, err := CreateKey(context.Background(), Config{Target: odd.URL}, client.CreateKeyRequest{}); err == nil {
		t.Error("a key without id was accepted")
	}
}

func TestResultOutput(t *testing.T) {
	res := Result{
		Op: OpEncryptBatch, Target: "https://127.0.0.1:8200", Concurrency: 32, PayloadSize: 32, BatchSize: 100,
		Protocol: "HTTP/2.0", Ops: 1000, Items: 100000, Errors: 2, FirstError: "POST /v1/kms/encrypt-batch: 500",
		Elapsed: 2 * time.Second, OpsPerSec: 500, ItemsPerSec: 50000,
		Latency: Latency{Min: time.Millisecond, P50: 2 * time.Millisecond, P999: 1500 * time.Microsecond, Max: time.Second},
	}
	var buf bytes.Buffer
	if err := res.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"encrypt-batch", "HTTP/2.0", "1000 ok, 2 errors", "ops/s", "500.0", "items/s", "50000.0", "p99.9", "first error"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"op", "ops", "items", "errors", "elapsed_ns", "ops_per_sec", "items_per_sec", "latency", "first_error"} {
		if _, ok := m[key]; !ok {
			t.Errorf("JSON lacks %q: %s", key, data)
		}
	}
	if lat := m["latency"].(map[string]any); lat["p999_ns"] != float64(1500*time.Microsecond) {
		t.Errorf("latency JSON: %v", lat)
	}
}

func TestPercentile(t *testing.T) {
	s := make([]time.Duration, 1000)
	for i := range s {
		s[i] = time.Duration(i + 1)
	}
	for q, want := range map[float64]time.Duration{0.5: 500, 0.9: 900, 0.99: 990, 0.999: 999, 1: 1000, 0: 1} {
		if got := percentile(s, q); got != want {
			t.Errorf("q=%v: %v, want %v", q, got, want)
		}
	}
	if got := percentile([]time.Duration{7}, 0.999); got != 7 {
		t.Errorf("single sample: %v", got)
	}
}

// BenchmarkWorkerRequest measures the generator's own cost per request
// against a loopback server (HTTP/1.1 and HTTP/2 over TLS).
func BenchmarkWorkerRequest(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ciphertext":"AAAA","key_id":"k","key_version":1}`))
	})
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"http1", false}, {"h2", true}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := httptest.NewUnstartedServer(handler)
			if tc.tls {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			b.ReportAllocs()
			b.ResetTimer()
			res, err := Run(context.Background(), Config{
				Target: srv.URL, KeyID: "k", Concurrency: 1, Requests: int64(b.N), InsecureSkipVerify: true,
			})
			if err != nil || res.Ops != int64(b.N) {
				b.Fatalf("ops %d err %v (%s)", res.Ops, err, res.FirstError)
			}
		})
	}
}
