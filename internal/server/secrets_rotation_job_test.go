package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/secrets"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// jobEnv is a server whose audit trail is a real one on disk, with the
// sys for running the rotation job by hand.
type jobEnv struct {
	*iamEnv
	sys      *sys.Sys
	trail    *audit.Trail
	trailDir string
}

func newJobEnv(t *testing.T) *jobEnv {
	t.Helper()
	dir := t.TempDir()
	k, err := audit.LoadOrCreateKeys(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	je := &jobEnv{trailDir: filepath.Join(dir, "trail")}
	if je.trail, err = audit.Open(audit.Options{Keys: k, Dir: je.trailDir, ReplicaID: "r1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { je.trail.Close() })
	e := &iamEnv{t: t, rec: &memRecorder{}}
	e.now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	bar := barrier.New(inmem.New())
	je.sys = sys.New(bar, e.now)
	je.sys.Secrets = secrets.New(bar, je.sys.Keys, secrets.WithClock(e.now), secrets.WithWebhookTimeout(300*time.Millisecond))
	ts := httptest.NewServer(server.New(je.sys, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: je.trail}))
	t.Cleanup(ts.Close)
	e.url = ts.URL
	var ir client.InitResponse
	e.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken
	je.iamEnv = e
	return je
}

// jobRecords are the trail's records of the rotation job, from disk.
func jobRecords(t *testing.T, dir string) []audit.Record {
	t.Helper()
	var out []audit.Record
	sc := bufio.NewScanner(bytes.NewReader(auditBytes(t, dir)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("trail line: %v", err)
		}
		if r.Door == "job" && r.Action == "secret:Rotate" {
			out = append(out, r)
		}
	}
	return out
}

// Every rotation the background job runs, and every failure, is in the
// audit trail (read from disk) with the secret's name and versions,
// recorded before it starts; no value is.
func TestScheduledRotationAudited(t *testing.T) {
	e := newJobEnv(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer hook.Close()
	const planted = "planted-old-value-3f9a"
	for _, name := range []string{"team-a/job", "team-a/hook"} {
		e.must("POST", "/v1/secrets/data/"+name, e.root, client.SecretPutRequest{Fields: map[string]string{"password": planted}}, nil)
	}
	e.must("PUT", "/v1/secrets/rotation/team-a/job", e.root, client.SecretRotationRequest{Every: "1d", With: "random:"}, nil)
	e.must("PUT", "/v1/secrets/rotation/team-a/hook", e.root, client.SecretRotationRequest{Every: "1d", With: "webhook:" + hook.URL}, nil)
	e.offset.Add(int64(25 * time.Hour))
	n, err := e.sys.Secrets.RotateDue(context.Background())
	if n != 1 || err != nil {
		t.Fatalf("job: %d rotations, %v", n, err)
	}
	v, err := e.sys.Secrets.Get(context.Background(), "team-a/job", 0, "")
	if err != nil || v.Version != 2 {
		t.Fatalf("rotated secret: version %d, %v", v.Version, err)
	}
	got := map[string][]string{}
	for _, r := range jobRecords(t, e.trailDir) {
		if r.Type != audit.TypeEvent || r.Principal.Kind != "system" {
			t.Errorf("job record type %q principal %+v", r.Type, r.Principal)
		}
		got[r.Resource] = append(got[r.Resource], r.Phase+"|"+r.Outcome+"|"+r.ErrorCode+"|"+r.Detail)
	}
	want := map[string][]string{
		"secret/team-a/job":  {"intent|||scheduled secret_version=1", "|ok||scheduled secret_version=2 previous_version=1"},
		"secret/team-a/hook": {"intent|||scheduled secret_version=1", "|error|rotation_failed|scheduled secret_version=1 pending_version=2"},
	}
	for res, w := range want {
		if strings.Join(got[res], "\n") != strings.Join(w, "\n") {
			t.Errorf("%s records:\n%s\nwant\n%s", res, strings.Join(got[res], "\n"), strings.Join(w, "\n"))
		}
	}
	all := auditBytes(t, e.trailDir)
	if bytes.Contains(all, []byte(planted)) || bytes.Contains(all, []byte(v.Fields["password"])) || bytes.Contains(all, []byte(hook.URL)) {
		t.Fatal("a value or the webhook URL is in the audit trail")
	}
}

// Fail closed: when the trail cannot record a scheduled rotation, the job
// does not rotate.
func TestScheduledRotationNotRunUnrecorded(t *testing.T) {
	e := newJobEnv(t)
	e.must("POST", "/v1/secrets/data/team-a/job", e.root, client.SecretPutRequest{Fields: map[string]string{"password": "old-value"}}, nil)
	e.must("PUT", "/v1/secrets/rotation/team-a/job", e.root, client.SecretRotationRequest{Every: "1d", With: "random:"}, nil)
	e.offset.Add(int64(25 * time.Hour))
	if err := e.trail.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := e.sys.Secrets.RotateDue(context.Background())
	if n != 0 || !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("job with a closed trail: %d rotations, %v", n, err)
	}
	md, err := e.sys.Secrets.Describe(context.Background(), "team-a/job")
	if err != nil || md.CurrentVersion != 1 || md.LatestVersion != 1 || md.PendingVersion != 0 {
		t.Fatalf("after a refused record: current %d latest %d pending %d, %v", md.CurrentVersion, md.LatestVersion, md.PendingVersion, err)
	}
}

// The outcome of a scheduled rotation is recorded even when the job's
// context ends during it (the job leadership lost, a shutdown): by then
// the webhook may have applied the new value, and the trail must say so.
func TestScheduledRotationOutcomeRecordedAfterCancel(t *testing.T) {
	e := newJobEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte(`"step":"apply"`)) {
			cancel() // applied; the job's context ends before the test step
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer hook.Close()
	e.must("POST", "/v1/secrets/data/team-a/cancelled", e.root, client.SecretPutRequest{Fields: map[string]string{"password": "old-value"}}, nil)
	e.must("PUT", "/v1/secrets/rotation/team-a/cancelled", e.root, client.SecretRotationRequest{Every: "1d", With: "webhook:" + hook.URL}, nil)
	e.offset.Add(int64(25 * time.Hour))
	_, _ = e.sys.Secrets.RotateDue(ctx)
	var got []string
	for _, r := range jobRecords(t, e.trailDir) {
		got = append(got, r.Phase+"|"+r.Outcome)
	}
	if len(got) != 2 || got[0] != "intent|" || got[1] != "|error" {
		t.Fatalf("job records %v, want the intent and an error outcome", got)
	}
}
