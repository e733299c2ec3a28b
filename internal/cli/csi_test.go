package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
)

// TestCSIProviderUsage: bad flags are usage errors (exit 2) that say
// which flag, before any socket is created.
func TestCSIProviderUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"csi-provider", "--socket", ""}, "--socket must not be empty"},
		{[]string{"csi-provider", "--socket", filepath.Join(dir, "s"), "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"csi-provider", "--socket", filepath.Join(dir, "s"), "--ca-cert", filepath.Join(dir, "none.pem")}, "--ca-cert"},
		{[]string{"csi-provider", "--socket", filepath.Join(dir, "s"), "--address", "ftp://x"}, "--address"},
	} {
		code, _, stderr := runCLI(t, "", c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "s")); !os.IsNotExist(err) {
		t.Errorf("a refused start left a socket: %v", err)
	}
}

// TestCSIProviderServes: the command serves the provider API on --socket
// and removes the socket when it stops.
func TestCSIProviderServes(t *testing.T) {
	dir, err := os.MkdirTemp("", "csicli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "coffer.sock")
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd()
	root.SetArgs([]string{"csi-provider", "--socket", sock, "--address", "http://127.0.0.1:1"})
	root.SetOut(&syncBuffer{})
	root.SetErr(&syncBuffer{})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	csi := v1alpha1.NewCSIDriverProviderClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err := csi.Version(context.Background(), &v1alpha1.VersionRequest{Version: "v1alpha1"})
		if err == nil && v.RuntimeName == "coffer" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Version answer within 15s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("csi-provider: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("csi-provider did not stop")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is left after the stop: %v", err)
	}
}
