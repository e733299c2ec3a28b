// Package ha runs a real etcd cluster (the etcd binary) and several real
// `coffer server` processes on it, and checks what high availability
// promises: nothing acknowledged is lost under faults, rotations are
// exactly-once, and the histories clients observe are linearizable (within
// the documented propagation bound for what replicas serve from caches).
//
// The processes come from test/proc. The tests need the etcd binary and are
// skipped unless COFFER_E2E is set.
package ha

import (
	"testing"
	"time"

	"github.com/cofferkms/coffer/test/proc"
)

func TestMain(m *testing.M) { proc.Main(m) }

// requireE2E skips t unless COFFER_E2E is set.
func requireE2E(t testing.TB) {
	t.Helper()
	proc.RequireE2E(t, "the HA tests with the etcd binary and real coffer processes")
}

// patience scales every wait for a slow or loaded machine
// (COFFER_E2E_PATIENCE, default 60s).
func patience() time.Duration { return proc.Patience(60 * time.Second) }

// startEtcdCluster starts n etcd members (see proc.StartEtcd); on failure
// their logs are copied to the test's artifact directory.
func startEtcdCluster(t testing.TB, n int) *proc.Etcd {
	t.Helper()
	return proc.StartEtcd(t, n, proc.EtcdOptions{Patience: patience(), ArtifactDir: func() string { return artifactDir(t) }})
}

// dumpLogsOnFailure logs the tails of the named log files when t fails
// and copies the whole files to the test's artifact directory.
func dumpLogsOnFailure(t testing.TB, logs func() []string) {
	proc.DumpLogsOnFailure(t, func() string { return artifactDir(t) }, logs)
}
