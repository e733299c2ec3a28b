package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestK8sSyncUsage: bad flags are usage errors (exit 2) naming the flag,
// and an unreadable kubeconfig is an error (exit 1), before anything
// runs.
func TestK8sSyncUsage(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	dir := t.TempDir()
	kc := filepath.Join(dir, "none.yaml")
	base := []string{"k8s", "sync", "--kubeconfig", kc, "--address", "http://127.0.0.1:1", "--lease-namespace", "coffer-system"}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{append(base, "--workers", "0"), 2, "--workers must be at least 1"},
		{append(base, "--resync", "0s"), 2, "--resync must be positive"},
		{append(base, "--wait", "6m"), 2, "--wait must be between 1s and 5m"},
		{append(base, "--wait", "100ms"), 2, "--wait must be between 1s and 5m"},
		{append(base, "--lease-name", ""), 2, "--lease-name must not be empty"},
		{append(base, "--kube-qps", "0"), 2, "--kube-qps and --kube-burst must be positive"},
		{append(base, "--renew-deadline", "20s"), 2, "--lease-duration > --renew-deadline"},
		{append(base, "--renew-deadline", "14s"), 2, "greater than --renew-deadline plus --retry-period"},
		{append(base, "--lease-duration", "15500ms"), 2, "--lease-duration in whole seconds"},
		{append(base, "--address", "ftp://x"), 2, "--address"},
		{base, 1, "kubeconfig"},
	} {
		code, _, stderr := runCLI(t, "", c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args[3:], code, stderr, c.code, c.want)
		}
	}
	if _, err := os.Stat(saNamespaceFile); err != nil {
		code, _, stderr := runCLI(t, "", "k8s", "sync", "--kubeconfig", kc)
		if code != 2 || !strings.Contains(stderr, "--lease-namespace is required") {
			t.Errorf("no lease namespace: exit %d, stderr %q", code, stderr)
		}
	}
}

// TestLeaseIdentity: two identities of one host differ.
func TestLeaseIdentity(t *testing.T) {
	a, err := leaseIdentity()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := leaseIdentity()
	host, _ := os.Hostname()
	if a == b || !strings.HasPrefix(a, host+"_") {
		t.Fatalf("identities %q %q (host %q)", a, b, host)
	}
}
