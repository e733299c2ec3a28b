// Package kube runs real Kubernetes control-plane binaries for tests: etcd,
// kube-apiserver, the Coffer dev server and `coffer kms-plugin`, all as
// child processes on free loopback ports, stopped through t.Cleanup.
//
// It is an ordinary (non-test) package so the real-cluster tests of other
// packages can import it:
//
//	func TestSomething(t *testing.T) {
//		kube.RequireE2E(t) // skips unless COFFER_E2E is set
//		c := kube.StartCluster(t, kube.ClusterOptions{KMS: true})
//		cs := c.APIServer.Clientset()              // *kubernetes.Clientset as system:masters
//		raw := c.Etcd.Get(t, "/registry/secrets/default/x") // the stored bytes
//		...
//	}
//
// Pieces can also be started one by one: StartEtcd, StartCoffer (dev
// server, the coffer binary is built once per test process; set
// COFFER_BIN to use a prebuilt one), Coffer.CreateKey, StartPlugin
// (coffer kms-plugin with a token file), StartAPIServer (with an
// EncryptionConfiguration from EncryptionConfig or IdentityConfig, extra
// token users for RBAC tests and extra flags). APIServer.Restart and
// SetEncryptionConfig change the encryption config (restarting is faster
// than the automatic reload, which polls once a minute); Plugin.Restart and
// Coffer.Stop/Restart keep their addresses so the others reconnect.
//
// Binaries: etcd from $COFFER_ETCD, $ETCD_BIN, PATH or /usr/bin/etcd
// (Debian's etcd-server package works), kube-apiserver from $COFFER_KUBE_APISERVER or
// <module root>/.bin/kube-apiserver (test/kube/build-apiserver.sh builds
// it). RequireE2E skips a test when COFFER_E2E is unset; when it is set, a
// missing binary fails the test. Tests in a package that uses the harness
// should call kube.Main from TestMain so the built coffer binary is
// removed at the end. The child processes, free ports, polling and the
// coffer build come from test/proc, which test/ha and test/e2e share.
package kube

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferkms/coffer/test/proc"
)

// DefaultPatience is how long Patience lets a test wait by default.
const DefaultPatience = 5 * time.Minute

// Patience is how long an end-to-end test polls for a condition that
// normally holds within seconds (the apiserver's 10 s authentication
// cache, its 20 s KMS health cache, the plugin seeing a rotation, a
// process coming up). Tests poll and go on as soon as the condition holds,
// so a fast machine never waits for it; it is long so that a loaded CI
// machine is not mistaken for a broken one. COFFER_E2E_PATIENCE (a Go
// duration) overrides it.
func Patience() time.Duration { return proc.Patience(DefaultPatience) }

// RequireE2E skips t unless COFFER_E2E is set.
func RequireE2E(t testing.TB) {
	t.Helper()
	proc.RequireE2E(t, "tests with real etcd and kube-apiserver binaries")
}

// Main runs the tests and removes the coffer binary built for them. Call
// it from TestMain: func TestMain(m *testing.M) { kube.Main(m) }.
func Main(m *testing.M) { proc.Main(m) }

// ModuleRoot returns the directory of the coffer module's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	return proc.ModuleRoot(t)
}

// CofferBin returns the coffer binary: $COFFER_BIN, or ./cmd/coffer built
// once per test process.
func CofferBin(t testing.TB) string {
	t.Helper()
	return proc.CofferBin(t)
}

// APIServerBin returns the kube-apiserver binary ($COFFER_KUBE_APISERVER or
// <module root>/.bin/kube-apiserver); it fails t when there is none.
func APIServerBin(t testing.TB) string {
	t.Helper()
	b := os.Getenv("COFFER_KUBE_APISERVER")
	if b == "" {
		b = filepath.Join(ModuleRoot(t), ".bin", "kube-apiserver")
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("kube-apiserver not found (run test/kube/build-apiserver.sh, or set COFFER_KUBE_APISERVER): %v", err)
	}
	return b
}

// tempDir makes a short temporary directory (unix socket paths must stay
// under 108 bytes, which t.TempDir does not promise) removed at cleanup.
func tempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kube")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// dumpOnFailure logs the tail of a process's output when t failed.
func dumpOnFailure(t testing.TB, name string, p func() *proc.Proc) {
	t.Cleanup(func() {
		if t.Failed() {
			if pr := p(); pr != nil {
				t.Logf("---- %s output (tail) ----\n%s", name, pr.Tail(6000))
			}
		}
	})
}
