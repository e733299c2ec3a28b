package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

func (e *env) rotation(t *testing.T, name, with string) {
	t.Helper()
	if _, err := e.svc.SetRotation(ctx, name, RotationConfig{Every: 30 * 24 * time.Hour, With: with}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) meta(t *testing.T, svc *Service, name string) Metadata {
	t.Helper()
	md, err := svc.Describe(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func TestRotateRandomPromotes(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"user": "app", "password": "old-password"})
	e.rotation(t, "db", "random:length=40,charset=hex,field=password")
	md := e.meta(t, e.svc, "db")
	if md.Rotation == nil || md.Rotation.State != RotationIdle || !md.Rotation.NextAt.Equal(e.clk.now().Add(30*24*time.Hour)) {
		t.Fatalf("rotation after set: %+v", md.Rotation)
	}
	res, err := e.svc.Rotate(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if res.PreviousVersion != 1 || res.CurrentVersion != 2 || res.Resumed {
		t.Fatalf("result %+v", res)
	}
	v, err := e.svc.Get(ctx, "db", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	pw := v.Fields["password"]
	if v.Version != 2 || v.Fields["user"] != "app" || len(pw) != 40 || strings.Trim(pw, "0123456789abcdef") != "" {
		t.Fatalf("rotated value: version %d user %q password of %d bytes", v.Version, v.Fields["user"], len(pw))
	}
	prev, err := e.svc.Get(ctx, "db", 0, StagePrevious)
	if err != nil || prev.Fields["password"] != "old-password" {
		t.Fatalf("previous: %v %v", prev.Version, err)
	}
	md = e.meta(t, e.svc, "db")
	if md.PendingVersion != 0 || md.Rotation.State != RotationIdle || md.Rotation.LastRotated.IsZero() ||
		!md.Rotation.NextAt.Equal(e.clk.now().Add(30*24*time.Hour)) {
		t.Fatalf("metadata after rotation: %+v %+v", md, md.Rotation)
	}
}

func TestGenerator(t *testing.T) {
	g, _, err := parseWith("random:length=64,charset=ab")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[rune]int{}
	for _, c := range g.generate() {
		seen[c]++
	}
	if len(seen) != 2 || seen['a']+seen['b'] != 64 {
		t.Fatalf("generated %v", seen)
	}
	// Repeated characters count once (300 of them would otherwise make
	// the draw loop forever).
	g, _, err = parseWith("random:length=64,charset=" + strings.Repeat("xy", 150))
	if err != nil || g.chars != "xy" || len(g.generate()) != 64 {
		t.Fatalf("repeated charset: %q %v", g.chars, err)
	}
	if _, _, err := parseWith("random:charset=" + strings.Repeat("a", 5000)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("long with: %v", err)
	}
	g, _, _ = parseWith("random:")
	if s := g.generate(); len(s) != DefaultRandomLength || g.field != DefaultRandomField || strings.Trim(s, charsets["alnum"]) != "" {
		t.Fatalf("default generator: %d bytes, field %q", len(s), g.field)
	}
}

// The generator draws without modulo bias: with ascii-printable (94
// characters, 256 % 94 = 68) a plain byte % 94 would draw the first 68
// characters half again as often as the other 26.
func TestGeneratorUnbiased(t *testing.T) {
	g, _, err := parseWith("random:length=4096,charset=ascii-printable")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[byte]int{}
	for range 25 {
		s := g.generate()
		for i := 0; i < len(s); i++ {
			counts[s[i]]++
		}
	}
	var low, high float64
	for i := 0; i < len(g.chars); i++ {
		if i < 256%len(g.chars) {
			low += float64(counts[g.chars[i]])
		} else {
			high += float64(counts[g.chars[i]])
		}
	}
	lowN := float64(256 % len(g.chars))
	ratio := (low / lowN) / (high / (float64(len(g.chars)) - lowN))
	if ratio < 0.9 || ratio > 1.1 {
		t.Fatalf("the first %.0f characters are drawn %.2f times as often as the others", lowN, ratio)
	}
}

// A random generator below 64 bits of entropy is refused.
func TestGeneratorMinimumEntropy(t *testing.T) {
	for _, with := range []string{"random:length=8,charset=hex", "random:length=10,charset=alnum", "random:length=63,charset=ab"} {
		if _, _, err := parseWith(with); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "bits") {
			t.Errorf("%s: %v", with, err)
		}
	}
	for _, with := range []string{"random:length=16,charset=hex", "random:length=11,charset=alnum", "random:length=64,charset=ab", "random:"} {
		if _, _, err := parseWith(with); err != nil {
			t.Errorf("%s: %v", with, err)
		}
	}
}

func TestRotationBadInput(t *testing.T) {
	e := newEnv(t)
	e.put(t, "s", map[string]string{"k": "v"})
	if _, err := e.svc.Rotate(ctx, "s"); !errors.Is(err, ErrNoRotation) {
		t.Fatalf("rotate without config: %v", err)
	}
	if _, err := e.svc.DisableRotation(ctx, "s"); !errors.Is(err, ErrNoRotation) {
		t.Fatalf("disable without config: %v", err)
	}
	for _, with := range []string{
		"", "randomly", "lambda:x", "random:length=7", "random:length=5000", "random:length=x", "random:charset=a",
		"random:charset=a b", "random:field=a/b", "random:size=3", "random:length",
		"webhook:http://10.0.0.1/rotate", "webhook:http://example.com/rotate", "webhook:ftp://127.0.0.1/x",
		"webhook:https://user:pw@example.com/x", "webhook:/relative", "webhook:https://" + strings.Repeat("a", 3000),
	} {
		if _, err := e.svc.SetRotation(ctx, "s", RotationConfig{Every: 24 * time.Hour, With: with}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("with %q: %v", with, err)
		}
	}
	if _, err := e.svc.SetRotation(ctx, "s", RotationConfig{Every: 59 * time.Minute, With: "random:"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("every 59m: %v", err)
	}
	for _, s := range []string{"30m", "0d", "x", ""} {
		if _, err := ParseEvery(s); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("every %q: %v", s, err)
		}
	}
	if d, err := ParseEvery("30d"); err != nil || d != 30*24*time.Hour {
		t.Errorf("30d: %v %v", d, err)
	}
	for _, with := range []string{"webhook:https://rotator.example/x", "webhook:http://127.0.0.1:8080/x", "webhook:http://[::1]/x", "webhook:http://localhost/x"} {
		if _, err := e.svc.SetRotation(ctx, "s", RotationConfig{Every: time.Hour, With: with}); err != nil {
			t.Errorf("with %q: %v", with, err)
		}
	}
	if _, err := e.svc.SetRotation(ctx, "missing", RotationConfig{Every: time.Hour, With: "random:"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing secret: %v", err)
	}
}

// hook is a rotation webhook on loopback recording its calls.
type hook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	calls  []webhookCall
	bodies []string
	answer atomic.Value // func(w http.ResponseWriter)
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.answer.Store(func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"status":"ok"}`) })
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var c webhookCall
		_ = json.Unmarshal(b, &c)
		h.mu.Lock()
		h.calls = append(h.calls, c)
		h.bodies = append(h.bodies, string(b))
		h.mu.Unlock()
		h.answer.Load().(func(http.ResponseWriter))(w)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) set(f func(w http.ResponseWriter)) { h.answer.Store(f) }

func (h *hook) got() []webhookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhookCall(nil), h.calls...)
}

func TestRotateWebhook(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	e.put(t, "db", map[string]string{"password": "old-secret-value"})
	e.rotation(t, "db", "webhook:"+h.srv.URL+"/rotate")
	res, err := e.svc.Rotate(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	want := []webhookCall{{"db", 1, 2, "apply"}, {"db", 1, 2, "test"}}
	if got := h.got(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("calls %+v", got)
	}
	v, _ := e.svc.Get(ctx, "db", 0, "")
	if res.CurrentVersion != 2 || v.Version != 2 || len(v.Fields["password"]) != DefaultRandomLength {
		t.Fatalf("after webhook rotation: %+v, version %d", res, v.Version)
	}
	for _, b := range h.bodies {
		if strings.Contains(b, v.Fields["password"]) || strings.Contains(b, "old-secret-value") {
			t.Fatalf("a webhook call carries a value: %s", b)
		}
	}
}

func TestRotateWebhookFailuresLeaveCurrent(t *testing.T) {
	redirected := atomic.Bool{}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Store(true)
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer target.Close()
	cases := map[string]func(w http.ResponseWriter){
		"500":     func(w http.ResponseWriter) { w.WriteHeader(500) },
		"garbage": func(w http.ResponseWriter) { _, _ = io.WriteString(w, "<html>ok</html>") },
		"not ok":  func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"status":"done"}`) },
		"too big": func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, `{"status":"ok","x":"`+strings.Repeat("a", MaxWebhookResponse)+`"}`)
		},
		"redirect": func(w http.ResponseWriter) { w.Header().Set("Location", target.URL); w.WriteHeader(http.StatusFound) },
		"timeout":  func(w http.ResponseWriter) { time.Sleep(time.Second) },
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.svc.rot.timeout = 300 * time.Millisecond
			h := newHook(t)
			h.set(answer)
			e.put(t, "db", map[string]string{"password": "old-value"})
			e.rotation(t, "db", "webhook:"+h.srv.URL)
			_, err := e.svc.Rotate(ctx, "db")
			if !errors.Is(err, ErrRotationFailed) {
				t.Fatalf("rotate: %v", err)
			}
			v, err := e.svc.Get(ctx, "db", 0, "")
			if err != nil || v.Version != 1 || v.Fields["password"] != "old-value" {
				t.Fatalf("current after a failure: %d %v", v.Version, err)
			}
			md := e.meta(t, e.svc, "db")
			r := md.Rotation
			if md.PendingVersion != 2 || r.State != RotationFailed || r.Attempts != 1 || r.LastError == "" ||
				!r.NextAt.Equal(e.clk.now().Add(time.Minute)) {
				t.Fatalf("metadata after a failure: pending %d %+v", md.PendingVersion, r)
			}
			pending, _ := e.svc.Get(ctx, "db", 0, StagePending)
			if strings.Contains(r.LastError, pending.Fields["password"]) || strings.Contains(r.LastError, "old-value") || strings.Contains(r.LastError, "html") {
				t.Fatalf("last error carries a value or the body: %q", r.LastError)
			}
			if _, _, failed := e.svc.RotationCounts(); failed != 0 {
				t.Fatalf("failing gauge before any background run: %d", failed)
			}
			if redirected.Load() {
				t.Fatal("the redirect was followed")
			}
		})
	}
}

func TestRotationBackoffAndRetry(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	h.set(func(w http.ResponseWriter) { w.WriteHeader(503) })
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	e.clk.add(30 * 24 * time.Hour)
	if n, err := e.svc.RotateDue(ctx); n != 0 || err != nil {
		t.Fatalf("due run: %d %v", n, err)
	}
	if _, _, failing := e.svc.RotationCounts(); failing != 1 {
		t.Fatalf("failing gauge %d", failing)
	}
	// A replica whose last run is old (it lost the job leadership) stops
	// reporting its count.
	e.clk.add(failingFresh + time.Second)
	if _, _, failing := e.svc.RotationCounts(); failing != 0 {
		t.Fatalf("stale failing gauge %d", failing)
	}
	e.clk.add(-failingFresh - time.Second)
	// Not due again before the backoff.
	e.clk.add(59 * time.Second)
	if _, _ = e.svc.RotateDue(ctx); len(h.got()) != 1 {
		t.Fatalf("retried before the backoff: %d calls", len(h.got()))
	}
	e.clk.add(time.Second)
	_, _ = e.svc.RotateDue(ctx)
	md := e.meta(t, e.svc, "db")
	if len(h.got()) != 2 || md.Rotation.Attempts != 2 || !md.Rotation.NextAt.Equal(e.clk.now().Add(2*time.Minute)) {
		t.Fatalf("second attempt: %d calls, %+v", len(h.got()), md.Rotation)
	}
	if retryDelay(3) != 4*time.Minute || retryDelay(8) != MaxRetryDelay || retryDelay(1000) != MaxRetryDelay {
		t.Fatalf("backoff %s %s", retryDelay(3), retryDelay(8))
	}
	// The same pending version is retried, then promoted once the
	// webhook answers.
	h.set(func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"status":"ok"}`) })
	e.clk.add(2 * time.Minute)
	if n, err := e.svc.RotateDue(ctx); n != 1 || err != nil {
		t.Fatalf("due run: %d %v", n, err)
	}
	for _, c := range h.got() {
		if c.NewVersion != 2 || c.OldVersion != 1 {
			t.Fatalf("calls %+v", h.got())
		}
	}
	md = e.meta(t, e.svc, "db")
	if md.CurrentVersion != 2 || md.LatestVersion != 2 || md.Rotation.State != RotationIdle || md.Rotation.Attempts != 0 || md.Rotation.LastError != "" {
		t.Fatalf("after success: %+v %+v", md, md.Rotation)
	}
	if ok, failed, failing := e.svc.RotationCounts(); ok != 1 || failed != 2 || failing != 0 {
		t.Fatalf("counts %d %d %d", ok, failed, failing)
	}
}

func TestPutDuringRotationAndRollback(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	h.set(func(w http.ResponseWriter) { w.WriteHeader(500) })
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	if _, err := e.svc.Rotate(ctx, "db"); !errors.Is(err, ErrRotationFailed) {
		t.Fatal(err)
	}
	if _, err := e.svc.Put(ctx, PutRequest{Name: "db", Fields: map[string]string{"password": "new"}}); !errors.Is(err, ErrRotationPending) {
		t.Fatalf("put while pending: %v", err)
	}
	md, err := e.svc.DisableRotation(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	// The webhook may have applied version 2 before its test failed: the
	// stage goes, the version stays readable by number.
	if md.Rotation != nil || md.PendingVersion != 0 || md.CurrentVersion != 1 || md.Versions[1].Destroyed {
		t.Fatalf("after disable: %+v", md)
	}
	if v, err := e.svc.Get(ctx, "db", 2, ""); err != nil || v.Fields["password"] == "old" {
		t.Fatalf("the webhook's pending version is not readable after disable: %v", err)
	}
	if _, err := e.svc.Get(ctx, "db", 0, StagePending); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("a pending stage after disable: %v", err)
	}
	if marks, _ := e.bar.List(ctx, rotatePrefix); len(marks) != 0 {
		t.Fatalf("markers after disable: %v", marks)
	}
	if v := e.put(t, "db", map[string]string{"password": "new"}); v.Version != 3 {
		t.Fatalf("put after rollback: %d", v.Version)
	}
}

// A random generator's pending version (left by a crash before promotion)
// was applied nowhere: disable destroys it.
func TestDisableRotationDestroysRandomPending(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "random:length=16")
	m, rev, err := e.svc.load(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.rotate(ctx, m, rev, func(int) bool { return true }); err != nil {
		t.Fatal(err)
	}
	md, err := e.svc.DisableRotation(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if md.PendingVersion != 0 || md.CurrentVersion != 1 || !md.Versions[1].Destroyed {
		t.Fatalf("after disable: %+v", md)
	}
	if _, err := e.mem.Get(ctx, dataPath("db", 2)); err == nil {
		t.Fatal("the rolled back version's data is still stored")
	}
}

// A crash between phase 1 and 2: a new service instance (a restarted or
// another replica) on the same store resumes with the same pending version.
func TestRotationResumesAfterCrash(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	m, rev, err := e.svc.load(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.rotate(ctx, m, rev, func(int) bool { return true }); err != nil {
		t.Fatal(err)
	}
	pending, err := e.svc.Get(ctx, "db", 0, StagePending)
	if err != nil || pending.Version != 2 || len(h.got()) != 0 {
		t.Fatalf("after phase 1: %d %v, %d calls", pending.Version, err, len(h.got()))
	}
	restarted := e.replica(t)
	// Within the lease the rotation may still be running elsewhere: not
	// resumed, and a manual rotate is refused.
	e.clk.add(time.Second)
	if n, err := restarted.RotateDue(ctx); n != 0 || err != nil || len(h.got()) != 0 {
		t.Fatalf("resumed within the lease: %d %v, %d calls", n, err, len(h.got()))
	}
	if _, err := restarted.Rotate(ctx, "db"); !errors.Is(err, ErrRotationPending) || len(h.got()) != 0 {
		t.Fatalf("manual rotate within the lease: %v, %d calls", err, len(h.got()))
	}
	e.clk.add(2*DefaultWebhookTimeout + time.Minute)
	if n, err := restarted.RotateDue(ctx); n != 1 || err != nil {
		t.Fatalf("resume: %d %v", n, err)
	}
	if got := h.got(); len(got) != 2 || got[0].NewVersion != 2 || got[1].Step != "test" {
		t.Fatalf("calls %+v", got)
	}
	v, _ := restarted.Get(ctx, "db", 0, "")
	if v.Version != 2 || v.Fields["password"] != pending.Fields["password"] {
		t.Fatalf("promoted version %d is not the pending one", v.Version)
	}
	if md := e.meta(t, restarted, "db"); md.LatestVersion != 2 || md.PendingVersion != 0 {
		t.Fatalf("after resume: %+v", md)
	}
}

// A pending version whose data is gone is rolled back and the rotation
// starts over.
func TestRotationRollsBackLostPending(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "random:")
	m, rev, _ := e.svc.load(ctx, "db")
	if _, err := e.svc.rotate(ctx, m, rev, func(int) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Destroy(ctx, "db", []uint32{2}); err != nil {
		t.Fatal(err)
	}
	res, err := e.replica(t).Rotate(ctx, "db")
	if err != nil || res.CurrentVersion != 3 || res.Resumed {
		t.Fatalf("rotate: %+v %v", res, err)
	}
	if md := e.meta(t, e.svc, "db"); md.CurrentVersion != 3 || md.PreviousVersion != 1 || md.PendingVersion != 0 {
		t.Fatalf("after: %+v", md)
	}
}

// Two replicas run the due-rotation job at once: exactly one new version.
func TestRotateDueTwoReplicasOnce(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	e.put(t, "a", map[string]string{"password": "old"})
	e.put(t, "b", map[string]string{"password": "old"})
	e.put(t, "plain", map[string]string{"password": "old"})
	e.rotation(t, "a", "random:")
	e.rotation(t, "b", "webhook:"+h.srv.URL)
	other := e.replica(t)
	for round := 1; round <= 5; round++ {
		e.clk.add(31 * 24 * time.Hour)
		var wg sync.WaitGroup
		var total atomic.Int64
		for _, s := range []*Service{e.svc, other} {
			wg.Go(func() {
				n, err := s.RotateDue(ctx)
				if err != nil {
					t.Error(err)
				}
				total.Add(int64(n))
			})
		}
		wg.Wait()
		if total.Load() != 2 {
			t.Fatalf("round %d: %d rotations, want 2", round, total.Load())
		}
		for _, name := range []string{"a", "b"} {
			md := e.meta(t, e.svc, name)
			if want := uint32(round + 1); md.CurrentVersion != want || md.LatestVersion != want || md.PendingVersion != 0 {
				t.Fatalf("round %d %s: current %d latest %d pending %d", round, name, md.CurrentVersion, md.LatestVersion, md.PendingVersion)
			}
		}
	}
	if md := e.meta(t, e.svc, "plain"); md.LatestVersion != 1 {
		t.Fatalf("a secret without rotation was rotated: %d", md.LatestVersion)
	}
}

// A deposed leader that wrote phase 1 and then lost its promotion to the
// replica that resumed it does not promote again.
func TestDeposedLeaderCannotPromote(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "random:")
	m, rev, _ := e.svc.load(ctx, "db")
	if _, err := e.svc.rotate(ctx, m, rev, func(int) bool { return true }); err != nil {
		t.Fatal(err)
	}
	e.clk.add(2*DefaultWebhookTimeout + time.Minute)
	if _, err := e.replica(t).Rotate(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.promote(ctx, "db", 1, 2); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("late promote: %v", err)
	}
	if md := e.meta(t, e.svc, "db"); md.CurrentVersion != 2 || md.PreviousVersion != 1 {
		t.Fatalf("after: %+v", md)
	}
}

// countStore counts metadata reads.
type countStore struct {
	Store
	metaGets atomic.Int64
}

func (c *countStore) Get(ctx context.Context, path string) (storage.Entry, error) {
	if strings.HasPrefix(path, metaPrefix) {
		c.metaGets.Add(1)
	}
	return c.Store.Get(ctx, path)
}

// The due-rotation job reads only the secrets that have a rotation
// configuration (their markers), not every secret.
func TestRotateDueReadsOnlyRotatingSecrets(t *testing.T) {
	e := newEnv(t)
	for i := range 30 {
		e.put(t, fmt.Sprintf("plain/%d", i), map[string]string{"k": "v"})
	}
	e.put(t, "rotating", map[string]string{"k": "v"})
	e.rotation(t, "rotating", "random:")
	cs := &countStore{Store: e.bar}
	svc := New(cs, e.keys, WithClock(e.clk.now))
	if n, err := svc.RotateDue(ctx); n != 0 || err != nil {
		t.Fatalf("not due: %d %v", n, err)
	}
	if got := cs.metaGets.Load(); got != 1 {
		t.Fatalf("the job read %d secrets' metadata, want 1", got)
	}
}

// A webhook name that leads to a link-local address (a cloud metadata
// endpoint) is not called: refused at dial time, whatever the URL says.
func TestWebhookLinkLocalRefused(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:https://169.254.169.254/latest")
	_, err := e.svc.Rotate(ctx, "db")
	if !errors.Is(err, ErrRotationFailed) || !strings.Contains(err.Error(), "link-local") {
		t.Fatalf("rotate: %v", err)
	}
	if md := e.meta(t, e.svc, "db"); md.CurrentVersion != 1 || !strings.Contains(md.Rotation.LastError, "link-local") {
		t.Fatalf("after: %+v", md.Rotation)
	}
}

// The dial-time check: link-local and friends always refused; an http
// webhook (loopbackOnly) dials loopback only, whatever its name resolved to.
func TestCheckDialAddress(t *testing.T) {
	lo := context.WithValue(ctx, loopbackOnly{}, true)
	for _, c := range []struct {
		ctx  context.Context
		addr string
		want error
	}{
		{ctx, "169.254.169.254:80", errRefusedAddress},
		{ctx, "[fe80::1]:443", errRefusedAddress},
		{ctx, "0.0.0.0:443", errRefusedAddress},
		{ctx, "224.0.0.1:443", errRefusedAddress},
		{ctx, "[::ffff:169.254.169.254]:443", errRefusedAddress},
		{ctx, "[::]:443", errRefusedAddress},
		{ctx, "[64:ff9b::a9fe:a9fe]:80", errRefusedAddress},
		{ctx, "[64:ff9b::a00:1]:443", nil},
		{ctx, "10.0.0.1:443", nil},
		{lo, "10.0.0.1:80", errNotLoopback},
		{lo, "[64:ff9b::7f00:1]:80", errNotLoopback},
		{lo, "[::ffff:127.0.0.1]:80", nil},
		{lo, "127.0.0.1:80", nil},
		{lo, "[::1]:80", nil},
	} {
		if err := checkDialAddress(c.ctx, c.addr); err != c.want {
			t.Errorf("%s (loopback only %v): %v, want %v", c.addr, c.ctx != ctx, err, c.want)
		}
	}
}

// Two callers resuming a failed rotation from the same read (the job and a
// manual rotate): the first claims it, the second calls no webhook.
func TestRotationResumeClaimed(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	h.set(func(w http.ResponseWriter) { w.WriteHeader(500) })
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	if _, err := e.svc.Rotate(ctx, "db"); !errors.Is(err, ErrRotationFailed) {
		t.Fatal(err)
	}
	h.set(func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"status":"ok"}`) })
	stale, rev, err := e.svc.load(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.replica(t).Rotate(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	calls := len(h.got())
	if _, err := e.svc.rotate(ctx, stale, rev, nil); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a resume from a stale read: %v", err)
	}
	if len(h.got()) != calls {
		t.Fatalf("a resume from a stale read called the webhook: %+v", h.got()[calls:])
	}
}

// An http webhook call goes through the transport with the loopback-only
// mark: a non-loopback address is refused when dialled (the URL check at
// set time cannot see what localhost resolves to later).
func TestWebhookHTTPDialsLoopbackOnly(t *testing.T) {
	e := newEnv(t)
	svc := New(e.bar, e.keys, WithClock(e.clk.now), WithWebhookTimeout(time.Second))
	if err := svc.callWebhook(ctx, "http://10.255.255.1:80/rotate", nil, webhookCall{Secret: "db"}); err != errNotLoopback {
		t.Fatalf("http to a non-loopback address: %v, want %v", err, errNotLoopback)
	}
}

// A webhook's pending version cannot turn into a random: one (which a
// disable would destroy) by setting the rotation again.
func TestSetRotationKeepsWebhookPending(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	h.set(func(w http.ResponseWriter) { w.WriteHeader(500) })
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	if _, err := e.svc.Rotate(ctx, "db"); !errors.Is(err, ErrRotationFailed) {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRotation(ctx, "db", RotationConfig{Every: 24 * time.Hour, With: "random:"}); !errors.Is(err, ErrRotationPending) {
		t.Fatalf("webhook to random while pending: %v", err)
	}
	// Another webhook URL (a fixed rotator) is fine.
	if _, err := e.svc.SetRotation(ctx, "db", RotationConfig{Every: 24 * time.Hour, With: "webhook:" + h.srv.URL + "/v2"}); err != nil {
		t.Fatal(err)
	}
	md, err := e.svc.DisableRotation(ctx, "db")
	if err != nil || md.Versions[1].Destroyed {
		t.Fatalf("disable: %v %+v", err, md)
	}
}

// A pending version destroyed while the webhook runs is not promoted:
// current stays the readable old version.
func TestPendingDestroyedDuringRotationNotPromoted(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	e.put(t, "db", map[string]string{"password": "old"})
	e.rotation(t, "db", "webhook:"+h.srv.URL)
	h.set(func(w http.ResponseWriter) {
		if _, err := e.svc.Destroy(ctx, "db", []uint32{2}); err != nil {
			t.Error(err)
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	if _, err := e.svc.Rotate(ctx, "db"); !errors.Is(err, ErrConflict) {
		t.Fatalf("rotate: %v", err)
	}
	v, err := e.svc.Get(ctx, "db", 0, "")
	if err != nil || v.Version != 1 || v.Fields["password"] != "old" {
		t.Fatalf("current after: %d %v", v.Version, err)
	}
}
