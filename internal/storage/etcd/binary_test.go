package etcd_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/storage/storagetest"
	"github.com/cofferkms/coffer/test/proc"
)

// TestConformanceEtcdBinary runs the conformance suites against the etcd
// binary the process-level tests use (/usr/bin/etcd, or $COFFER_ETCD), which
// may be an older release than the embedded one.
func TestConformanceEtcdBinary(t *testing.T) {
	if os.Getenv("COFFER_E2E") == "" {
		t.Skip("set COFFER_E2E=1 to test against the etcd binary")
	}
	bin := os.Getenv("COFFER_ETCD")
	if bin == "" {
		bin = "/usr/bin/etcd"
	}
	ports := proc.FreePorts(t, 2)
	client, peer := proc.HostPort(ports[0]), proc.HostPort(ports[1])
	clientURL := "http://" + client
	cmd := exec.Command(bin, "--name", "m0", "--data-dir", t.TempDir(),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "m0=http://"+peer, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var b *etcd.Backend
	for deadline := time.Now().Add(30 * time.Second); ; {
		var err error
		b, err = etcd.Open(context.Background(), etcd.Config{Endpoints: []string{clientURL}, DialTimeout: time.Second, RequestTimeout: time.Second})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd binary not answering: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Close()
	openBin := func(t *testing.T) storage.Backend {
		return open(t, etcd.Config{Endpoints: []string{clientURL}})
	}
	t.Run("Backend", func(t *testing.T) { storagetest.Run(t, openBin) })
	t.Run("Watch", func(t *testing.T) { storagetest.RunWatch(t, openBin) })
	t.Run("CatchUp", func(t *testing.T) { runCatchUp(t, []string{clientURL}, 3000) })
}
