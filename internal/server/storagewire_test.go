package server

import (
	"fmt"
	"net/http"
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
