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
// Binaries: etcd from $COFFER_ETCD or PATH (Debian's etcd-server package
// works), kube-apiserver from $COFFER_KUBE_APISERVER or
// <module root>/.bin/kube-apiserver (test/kube/build-apiserver.sh builds
// it). RequireE2E skips a test when COFFER_E2E is unset; when it is set, a
// missing binary fails the test. Tests in a package that uses the harness
// should call kube.Main from TestMain so the built coffer binary is
// removed at the end.
package kube

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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
func Patience() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("COFFER_E2E_PATIENCE")); err == nil && d > 0 {
		return d
	}
	return DefaultPatience
}

// RequireE2E skips t unless COFFER_E2E is set.
func RequireE2E(t testing.TB) {
	t.Helper()
	if os.Getenv("COFFER_E2E") == "" {
		t.Skip("set COFFER_E2E=1 to run tests with real etcd and kube-apiserver binaries")
	}
}

// Main runs the tests and removes the coffer binary built for them. Call
// it from TestMain: func TestMain(m *testing.M) { kube.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error

	buildOnce sync.Once
	builtDir  string
	builtBin  string
	buildErr  error
)

// ModuleRoot returns the directory of the coffer module's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			rootErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			rootErr = errors.New("go env GOMOD: not inside the module")
			return
		}
		rootDir = filepath.Dir(gomod)
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootDir
}

// CofferBin returns the coffer binary: $COFFER_BIN, or ./cmd/coffer built
// once per test process.
func CofferBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("COFFER_BIN"); b != "" {
		return b
	}
	root := ModuleRoot(t)
	buildOnce.Do(func() {
		if builtDir, buildErr = os.MkdirTemp("", "coffer-kube-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(builtDir, "coffer")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/coffer")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/coffer: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// EtcdBin returns the etcd binary ($COFFER_ETCD or etcd from PATH); it
// fails t when there is none.
func EtcdBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("COFFER_ETCD"); b != "" {
		return b
	}
	b, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found in PATH (install Debian's etcd-server, or set COFFER_ETCD): %v", err)
	}
	return b
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
func dumpOnFailure(t testing.TB, name string, p func() *proc) {
	t.Cleanup(func() {
		if t.Failed() {
			if pr := p(); pr != nil {
				t.Logf("---- %s output (tail) ----\n%s", name, pr.out.tail(6000))
			}
		}
	})
}
