package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error

	buildOnce sync.Once
	builtDir  string
	builtBin  string
	buildErr  error
)

// Main runs the tests and then removes the coffer binary CofferBin built
// for them. Call it from TestMain: func TestMain(m *testing.M) { proc.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// ModuleRoot returns the directory of the coffer module's go.mod (from
// `go env GOMOD`).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			rootErr = fmt.Errorf("finding the go tool: %w", err)
			return
		}
		out, err := exec.Command(goTool, "env", "GOMOD").Output()
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
// from the module root once per test process into a temporary directory
// (Main removes it).
func CofferBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("COFFER_BIN"); b != "" {
		return b
	}
	root := ModuleRoot(t)
	buildOnce.Do(func() {
		if builtDir, buildErr = os.MkdirTemp("", "coffer-bin-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(builtDir, "coffer")
		cmd := exec.Command("go", "build", "-ldflags=-linkmode=internal", "-o", builtBin, "./cmd/coffer")
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

// EtcdBin returns the etcd binary: $COFFER_ETCD, $ETCD_BIN, etcd from
// PATH, or /usr/bin/etcd; it fails t when there is none.
func EtcdBin(t testing.TB) string {
	t.Helper()
	for _, env := range []string{"COFFER_ETCD", "ETCD_BIN"} {
		if b := os.Getenv(env); b != "" {
			return b
		}
	}
	if b, err := exec.LookPath("etcd"); err == nil {
		return b
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	t.Fatal("no etcd binary: install it (Debian: apt-get install etcd-server) or set COFFER_ETCD")
	return ""
}
