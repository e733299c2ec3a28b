package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/snapshot"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestSnapshotSaveRestoreOverHTTP: a snapshot taken over HTTP from a
// running server, restored into an empty bbolt file, gives a server
// (unsealed with the same share) that decrypts every ciphertext made
// before, with the same root token. Only sys:Snapshot may take one, and
// it is audited.
func TestSnapshotSaveRestoreOverHTTP(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ban, stop := runServer(t, server.Config{DevDir: dir})
	c, err := client.New(ban.Addr, client.WithToken(ban.RootToken))
	if err != nil {
		t.Fatal(err)
	}
	type sample struct {
		ct    []byte
		plain string
	}
	var samples []sample
	for i := range 5 {
		k, err := c.CreateKey(ctx, client.CreateKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if _, err := c.RotateKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
		plain := strings.Repeat("secret ", i+1)
		out, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte(plain)})
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, sample{out.Ciphertext, plain})
	}

	// Refused without sys:Snapshot; allowed by a policy that names it.
	none, err := c.CreateToken(ctx, client.CreateTokenRequest{DisplayName: "no policies"})
	if err != nil {
		t.Fatal(err)
	}
	if st, raw := doJSON(t, "GET", ban.Addr+"/v1/sys/storage/snapshot", none.Token, nil); st != http.StatusForbidden {
		t.Fatalf("snapshot by a token without policies: %d %s", st, raw)
	}
	if st, raw := doJSON(t, "PUT", ban.Addr+"/v1/policies/backup", ban.RootToken, client.PutPolicyRequest{
		Document: "statements:\n  - effect: allow\n    actions: [sys:Snapshot]\n    resources: [\"*\"]\n"}); st != http.StatusOK && st != http.StatusCreated {
		t.Fatalf("put policy: %d %s", st, raw)
	}
	backup, err := c.CreateToken(ctx, client.CreateTokenRequest{DisplayName: "backup", Policies: []string{"backup"}})
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := client.New(ban.Addr, client.WithToken(backup.Token))
	stream, err := bc.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot with a policy allowing sys:Snapshot: %v", err)
	}
	file := filepath.Join(t.TempDir(), "coffer.snap")
	data, err := io.ReadAll(stream)
	stream.Close()
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != stream.Size {
		t.Fatalf("got %d bytes, the server announced %d", len(data), stream.Size)
	}
	os.WriteFile(file, data, 0o600)
	sum, err := snapshot.Verify(bytes.NewReader(data), snapshot.ReadOptions{CofferVersion: sys.Version})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Checksum != stream.Checksum || sum.Backend != "bbolt" || sum.Count < 10 || sum.Revision == 0 {
		t.Fatalf("summary %+v, announced checksum %s", sum, stream.Checksum)
	}
	// No plaintext in the file.
	for _, s := range samples {
		if bytes.Contains(data, []byte(s.plain)) {
			t.Fatalf("the snapshot holds the plaintext %q", s.plain)
		}
	}
	stop()

	// The trail recorded the snapshot with its checksum.
	trail := readAll(t, filepath.Join(dir, "audit"))
	if !strings.Contains(trail, `"action":"sys:Snapshot"`) || !strings.Contains(trail, "sha256="+sum.Checksum) {
		t.Fatalf("the audit trail has no sys:Snapshot record with the checksum")
	}

	// Restore into an empty bbolt file next to the same unseal share.
	dir2 := t.TempDir()
	share, _ := os.ReadFile(filepath.Join(dir, "dev-unseal-share"))
	os.WriteFile(filepath.Join(dir2, "dev-unseal-share"), share, 0o600)
	store, err := bolt.Open(filepath.Join(dir2, "coffer.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(file)
	res, err := snapshot.Restore(ctx, f, store, snapshot.RestoreOptions{CofferVersion: sys.Version})
	f.Close()
	store.Close()
	if err != nil || !res.Verified || res.Written != sum.Count {
		t.Fatalf("restore: %+v, %v", res, err)
	}
	ban2, stop2 := runServer(t, server.Config{DevDir: dir2, DevRootToken: ban.RootToken})
	defer stop2()
	c2, _ := client.New(ban2.Addr, client.WithToken(ban.RootToken))
	for _, s := range samples {
		out, err := c2.Decrypt(ctx, client.DecryptRequest{Ciphertext: s.ct})
		if err != nil || string(out.Plaintext) != s.plain {
			t.Fatalf("decrypt on the restored server: %v", err)
		}
	}
	// The token made before the snapshot is still known (it was stored).
	bc2, _ := client.New(ban2.Addr, client.WithToken(backup.Token))
	s2, err := bc2.Snapshot(ctx)
	if err != nil {
		t.Fatalf("the backup token restored with the store: %v", err)
	}
	s2.Close()
}

func readAll(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".jsonl") {
			data, _ := os.ReadFile(p)
			b.Write(data)
		}
		return nil
	})
	return b.String()
}

// blockingStore holds a snapshot's view open until release is closed.
type blockingStore struct {
	*bolt.Backend
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) Snapshot(ctx context.Context, fn func(storage.View) error) error {
	b.entered <- struct{}{}
	<-b.release
	return b.Backend.Snapshot(ctx, fn)
}

func apiServer(t *testing.T, store storage.Backend) (string, string) {
	t.Helper()
	s := sys.New(barrier.New(store), nil)
	_, root, err := s.DevBootstrap(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	api := server.New(s, server.Options{})
	api.ServeSnapshots(store)
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	return hs.URL, root
}

// TestSnapshotOneAtATime: a second snapshot while one is being taken is
// refused with 503 busy (each holds a spool file as large as the store),
// and the first one completes.
func TestSnapshotOneAtATime(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "coffer.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	store := &blockingStore{Backend: b, entered: make(chan struct{}, 2), release: make(chan struct{})}
	addr, root := apiServer(t, store)

	var wg sync.WaitGroup
	var first int
	var firstBody []byte
	wg.Go(func() { first, firstBody = doJSON(t, "GET", addr+"/v1/sys/storage/snapshot", root, nil) })
	select {
	case <-store.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first snapshot did not start")
	}
	st, raw := doJSON(t, "GET", addr+"/v1/sys/storage/snapshot", root, nil)
	var eb client.ErrorBody
	json.Unmarshal(raw, &eb)
	if st != http.StatusServiceUnavailable || eb.Error.Code != "busy" {
		t.Errorf("a second snapshot meanwhile: %d %s", st, raw)
	}
	close(store.release)
	wg.Wait()
	if first != http.StatusOK {
		t.Fatalf("the first snapshot: %d %s", first, firstBody)
	}
	if _, err := snapshot.Verify(bytes.NewReader(firstBody), snapshot.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	// The slot is free again.
	if st, raw := doJSON(t, "GET", addr+"/v1/sys/storage/snapshot", root, nil); st != http.StatusOK {
		t.Errorf("a snapshot after the first: %d %s", st, raw)
	}
}

// TestSnapshotNeedsASnapshotter: a store without consistent views is not
// snapshotted online (it could mix states).
func TestSnapshotNeedsASnapshotter(t *testing.T) {
	addr, root := apiServer(t, inmem.New())
	st, raw := doJSON(t, "GET", addr+"/v1/sys/storage/snapshot", root, nil)
	if st != http.StatusNotImplemented || !strings.Contains(string(raw), "consistent snapshot") {
		t.Fatalf("snapshot of an inmem store: %d %s", st, raw)
	}
}
