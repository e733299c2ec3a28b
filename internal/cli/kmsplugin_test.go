package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/cofferkms/coffer/client"
)

// syncBuffer is a bytes.Buffer safe for the command's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKMSPluginServers: `coffer kms-plugin --server A --server B` hands both
// to the client. The first refuses connections, so the plugin is healthy
// (its Status says ok, which it only does after an encrypt/decrypt round
// trip) only if it failed over to the second.
func TestKMSPluginServers(t *testing.T) {
	startDocServer(t)
	live := os.Getenv("COFFER_ADDR")
	c, err := client.New(live, client.WithToken(os.Getenv("COFFER_TOKEN")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(context.Background(), client.CreateKeyRequest{Alias: "alias/k8s"}); err != nil {
		t.Fatal(err)
	}
	down, err := unusedAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kmscli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kms.sock")

	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd()
	root.SetArgs([]string{"kms-plugin", "--server", "http://" + down, "--server", live, "--key", "alias/k8s",
		"--listen", "unix://" + sock, "--health-interval", "100ms"})
	var stderr syncBuffer
	root.SetOut(&syncBuffer{})
	root.SetErr(&stderr)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kms-plugin: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("kms-plugin did not stop")
		}
	})

	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kms := kmsapi.NewKeyManagementServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := kms.Status(context.Background(), &kmsapi.StatusRequest{})
		if err == nil && st.Healthz == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not healthy within 30s: %v\nstderr:\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if want := "server=http://" + down + "," + live; !strings.Contains(stderr.String(), want) {
		t.Errorf("the plugin's start line does not list both servers (%s):\n%s", want, stderr.String())
	}
}
