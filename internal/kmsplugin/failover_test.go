package kmsplugin

// The plugin given two Coffer replicas: the real Coffer handler on two
// loopback HTTP servers over one shared store, each replica unsealed on its
// own with the same shares, and the real kube-apiserver KMS v2 code path in
// front of the plugin (loadAPIServer).

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// startReplicas starts n Coffer replicas over one store, initializes them
// through the first and unseals each through its own address. setup runs
// with a root client of the first replica once it is unsealed, before the
// others are (which then load what it made). It returns the servers and the
// root token.
func startReplicas(t *testing.T, n int, setup func(*client.Client)) ([]*httptest.Server, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := inmem.New()
	var servers []*httptest.Server
	var systems []*sys.Sys
	for range n {
		s := sys.New(barrier.New(store), nil)
		ts := httptest.NewServer(server.New(s, server.Options{}))
		t.Cleanup(ts.Close)
		t.Cleanup(s.Seal)
		servers, systems = append(servers, ts), append(systems, s)
	}
	ini, err := systems[0].Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range servers {
		c, err := client.New(ts.URL, client.WithToken(ini.RootToken))
		if err != nil {
			t.Fatal(err)
		}
		for _, share := range ini.Shares[:2] {
			if _, err := c.Unseal(ctx, client.UnsealRequest{Share: share}); err != nil {
				t.Fatalf("unsealing %s: %v", ts.URL, err)
			}
		}
		if i == 0 && setup != nil {
			setup(c)
		}
	}
	return servers, ini.RootToken
}

// readyz asks the plugin's health handler for /readyz.
func readyz(t *testing.T, p *Plugin) (int, map[string]string) {
	t.Helper()
	rec := httptest.NewRecorder()
	HealthHandler(p, nil, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body, err)
	}
	return rec.Code, body
}

// TestPluginFailsOver: the replica the plugin uses goes away; the plugin's
// health stays ok through the other one, an apiserver started afterwards
// reads the Secret written before and writes new ones; with both replicas
// gone the plugin reports unreachable.
func TestPluginFailsOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	replicas, root := startReplicas(t, 2, func(admin *client.Client) {
		if _, err := admin.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/k8s"}); err != nil {
			t.Fatal(err)
		}
	})
	a, b := replicas[0], replicas[1]
	c, err := client.NewEndpoints([]string{a.URL, b.URL}, client.WithToken(root), client.WithAttemptTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	sp := servePlugin(t, Config{Coffer: c, Key: "alias/k8s", HealthInterval: time.Hour, Timeout: 5 * time.Second})
	if code, body := readyz(t, sp.P); code != http.StatusOK || body["server"] != a.URL {
		t.Fatalf("/readyz with both replicas up: %d %v, want 200 using %s", code, body, a.URL)
	}
	api := loadAPIServer(t, sp.Socket, "apiserver-1")
	secret := []byte(`{"kind":"Secret","data":{"password":"written-before-the-failover"}}`)
	stored, err := api.write("s1", secret)
	if err != nil {
		t.Fatalf("write: %v", err)
	}

	// The replica the plugin uses dies.
	a.Close()
	if err := sp.P.Check(ctx); err != nil {
		t.Fatalf("health check with one replica left: %v", err)
	}
	if code, body := readyz(t, sp.P); code != http.StatusOK || body["server"] != b.URL {
		t.Fatalf("/readyz after the first replica died: %d %v, want 200 using %s", code, body, b.URL)
	}
	// A kube-apiserver (re)started now has no cached seed: it unwraps the
	// stored one and wraps a new one, both through the plugin.
	api2 := loadAPIServer(t, sp.Socket, "apiserver-2")
	if err := api2.health(); err != nil {
		t.Fatalf("kms-providers healthz after the failover: %v", err)
	}
	got, _, err := api2.read("s1", stored)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("reading the Secret written before the failover: %q, %v", got, err)
	}
	stored2, err := api2.write("s2", []byte("written after the failover"))
	if err != nil {
		t.Fatalf("write after the failover: %v", err)
	}
	if got, _, err := api.read("s2", stored2); err != nil || string(got) != "written after the failover" {
		t.Fatalf("the first apiserver reading the new Secret: %q, %v", got, err)
	}

	// Both gone: unhealthy, and says why.
	b.Close()
	if err := sp.P.Check(ctx); err == nil {
		t.Fatal("health check with no replica left succeeded")
	}
	code, body := readyz(t, sp.P)
	if code != http.StatusServiceUnavailable || body["class"] != "unreachable" {
		t.Fatalf("/readyz with no replica: %d %v, want 503 class unreachable", code, body)
	}
	for _, u := range []string{a.URL, b.URL} {
		if !bytes.Contains([]byte(body["error"]), []byte(u)) {
			t.Errorf("/readyz error does not name %s: %s", u, body["error"])
		}
	}
}
