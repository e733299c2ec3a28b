package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/storage/etcd"
)

// TestClassifyUnavailable: an unreachable etcd is a 503 with its own code,
// and the client never sees the cause (endpoints, gRPC detail).
func TestClassifyUnavailable(t *testing.T) {
	err := fmt.Errorf("keys: create: %w", fmt.Errorf("%w: etcd transaction: dial tcp 10.1.2.3:2379: connection refused", etcd.ErrUnavailable))
	status, code, msg := classify(err)
	if status != http.StatusServiceUnavailable || code != "storage_unavailable" {
		t.Errorf("classify = %d %s, want 503 storage_unavailable", status, code)
	}
	if strings.Contains(msg, "10.1.2.3") {
		t.Errorf("message %q shows the cause to the client", msg)
	}
}

// TestChooseStorage: where local files go for each storage.
func TestChooseStorage(t *testing.T) {
	var bolt, boltDir, etcdCfg, dev Config
	bolt.Storage.Path = "/srv/coffer/coffer.db"
	boltDir.Storage.Path, boltDir.DataDir = "/srv/coffer/coffer.db", "/var/lib/coffer"
	etcdCfg.Storage.Etcd, etcdCfg.DataDir = &EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379"}}, "/var/lib/coffer"
	dev.Dev = true
	for _, tc := range []struct {
		name    string
		cfg     Config
		bolt    string
		dataDir string
	}{
		{"bbolt", bolt, "/srv/coffer/coffer.db", "/srv/coffer"},
		{"bbolt with data_dir", boltDir, "/srv/coffer/coffer.db", "/var/lib/coffer"},
		{"etcd", etcdCfg, "", "/var/lib/coffer"},
		{"dev", dev, "/tmp/dev/coffer.db", "/tmp/dev"},
	} {
		got, err := chooseStorage(tc.cfg, "/tmp/dev/coffer.db")
		if err != nil || got.boltPath != tc.bolt || got.dataDir != tc.dataDir || (got.etcd != nil) != (tc.bolt == "") {
			t.Errorf("%s: %+v, %v; want bolt %q, data dir %q", tc.name, got, err, tc.bolt, tc.dataDir)
		}
	}
}

// TestStartGate: until the server is built, the listener answers the
// probes itself and refuses every other request (nothing reaches a
// service); then every request, probes included, goes to the real handler.
func TestStartGate(t *testing.T) {
	g := newStartGate(true)
	serve := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}
	want := func(what string, code int, body string, wantCode int, wantIn ...string) {
		t.Helper()
		if code != wantCode {
			t.Errorf("%s: %d %s, want %d", what, code, body, wantCode)
		}
		for _, w := range wantIn {
			if !strings.Contains(body, w) {
				t.Errorf("%s: %s, want it to contain %q", what, body, w)
			}
		}
	}
	code, body := serve("GET", "/healthz")
	want("healthz while waiting", code, body, 200, `"status":"ok"`)
	code, body = serve("GET", "/readyz")
	want("readyz before the first attempt", code, body, 503, `"status":"waiting for storage"`, `"since":"`, "has not answered since")
	g.waiting(fmt.Errorf("%w: endpoint http://127.0.0.1:1: connection refused", etcd.ErrUnavailable))
	code, body = serve("GET", "/readyz")
	want("readyz after a failed attempt", code, body, 503, `"status":"waiting for storage"`, "last error", "http://127.0.0.1:1: connection refused")
	for _, r := range [][2]string{{"GET", "/v1/sys/seal-status"}, {"POST", "/v1/sys/init"}, {"POST", "/v1/kms/encrypt"}, {"POST", "/readyz"}, {"GET", "/metrics"}} {
		code, body = serve(r[0], r[1])
		want(r[0]+" "+r[1]+" while waiting", code, body, 503, `"code":"storage_unavailable"`, "waiting for its storage")
		if strings.Contains(body, "127.0.0.1:1") {
			t.Errorf("%s %s: %s shows the cause beyond /readyz", r[0], r[1], body)
		}
	}

	g.reached()
	code, body = serve("GET", "/readyz")
	want("readyz once the storage answered", code, body, 503, `"status":"starting"`)
	if strings.Contains(body, "connection refused") {
		t.Errorf("readyz once the storage answered still shows the old error: %s", body)
	}
	code, body = serve("GET", "/v1/keys")
	want("a request while starting", code, body, 503, `"code":"unavailable"`)

	g.open(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, "api "+r.URL.Path)
	}))
	for _, p := range []string{"/healthz", "/readyz", "/v1/sys/seal-status"} {
		code, body = serve("GET", p)
		want("GET "+p+" once open", code, body, http.StatusTeapot, "api "+p)
	}

	// bbolt: no wait, only the short start.
	code, body = func() (int, string) {
		rec := httptest.NewRecorder()
		newStartGate(false).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}()
	want("readyz of a server that does not wait", code, body, 503, `"status":"starting"`)
}
