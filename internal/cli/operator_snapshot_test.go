package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/snapshot"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
	"github.com/cofferkms/coffer/internal/sys"
)

// snapServer runs server.Run with cfg until the test ends or stop is
// called.
func snapServer(t *testing.T, cfg server.Config) (server.Banner, func()) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler), func(b server.Banner) { ready <- b })
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	select {
	case b := <-ready:
		t.Cleanup(stop)
		return b, stop
	case err := <-errc:
		cancel()
		t.Fatalf("server: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("the server did not listen within 60s")
	}
	return server.Banner{}, nil
}

// sample is a ciphertext and its plaintext.
type sample struct {
	ct    []byte
	plain string
}

// makeSamples creates n keys through the API (one rotated) and encrypts
// under each.
func makeSamples(t *testing.T, c *client.Client, n int) []sample {
	t.Helper()
	ctx := context.Background()
	var out []sample
	for i := range n {
		k, err := c.CreateKey(ctx, client.CreateKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := c.RotateKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
		plain := fmt.Sprintf("plaintext %d made before the move", i)
		ct, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte(plain)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sample{ct.Ciphertext, plain})
	}
	return out
}

func decryptAll(t *testing.T, c *client.Client, samples []sample) {
	t.Helper()
	for _, s := range samples {
		out, err := c.Decrypt(context.Background(), client.DecryptRequest{Ciphertext: s.ct})
		if err != nil || string(out.Plaintext) != s.plain {
			t.Fatalf("decrypt %q: %v", s.plain, err)
		}
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSnapshotSaveRestoreCommands: save from a running server over HTTP
// (0600, verified), inspect, restore with --config into an empty bbolt file
// (refused while a server holds the file, without --yes in a script, and
// onto a non-empty store without --force), and a server started on the
// restored file decrypts every ciphertext made before.
func TestSnapshotSaveRestoreCommands(t *testing.T) {
	dir := t.TempDir()
	ban, stop := snapServer(t, server.Config{Dev: true, DevDir: dir})
	c, _ := client.New(ban.Addr, client.WithToken(ban.RootToken))
	samples := makeSamples(t, c, 4)
	t.Setenv("COFFER_ADDR", ban.Addr)
	t.Setenv("COFFER_TOKEN", ban.RootToken)

	snap := filepath.Join(t.TempDir(), "coffer.snap")
	code, out, errOut := runCLI(t, "", "operator", "snapshot", "save", snap, "-o", "json")
	if code != 0 {
		t.Fatalf("save: exit %d: %s", code, errOut)
	}
	var saved snapshotFileInfo
	if err := json.Unmarshal([]byte(out), &saved); err != nil {
		t.Fatalf("save -o json: %v: %s", err, out)
	}
	if saved.Count < 6 || saved.Backend != "bbolt" || !saved.Restorable || saved.Checksum == "" {
		t.Errorf("save printed %+v", saved)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != saved.Bytes {
		t.Fatalf("the saved file: %v, %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(snap), ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if code, _, errOut := runCLI(t, "", "operator", "snapshot", "save", snap); code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("save over an existing file: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "", "operator", "snapshot", "save", snap, "--force"); code != 0 {
		t.Errorf("save --force: exit %d: %s", code, errOut)
	}
	code, out, errOut = runCLI(t, "", "operator", "snapshot", "inspect", snap)
	if code != 0 || !strings.Contains(out, "Restorable here:") || !strings.Contains(out, "bbolt at revision") {
		t.Errorf("inspect: exit %d: %s%s", code, out, errOut)
	}

	// Restore refuses a file a running server holds.
	running := writeConfig(t, "storage:\n  path: "+filepath.Join(dir, "coffer.db")+"\n")
	if code, _, errOut := runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", running, "--yes"); code != 1 || !strings.Contains(errOut, "stop it first") {
		t.Errorf("restore onto a running server's file: exit %d: %s", code, errOut)
	}
	stop()

	dir2 := t.TempDir()
	cfg2 := writeConfig(t, "storage:\n  path: "+filepath.Join(dir2, "coffer.db")+"\n")
	if code, _, errOut := runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", cfg2); code != 2 || !strings.Contains(errOut, "--yes") {
		t.Errorf("restore in a script without --yes: exit %d: %s", code, errOut)
	}
	code, out, errOut = runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", cfg2, "--yes")
	if code != 0 || !strings.Contains(out, "Verified:") {
		t.Fatalf("restore: exit %d: %s%s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", cfg2, "--yes")
	if code != 1 || !strings.Contains(errOut, "not empty") || !strings.Contains(errOut, "--force") {
		t.Errorf("restore onto a non-empty store: exit %d: %s", code, errOut)
	}
	code, out, errOut = runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", cfg2, "--yes", "--force", "-o", "json")
	var res struct {
		Deleted  int  `json:"deleted"`
		Verified bool `json:"verified"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Deleted == 0 || !res.Verified {
		t.Fatalf("restore --force: exit %d: %s%s", code, out, errOut)
	}

	share, _ := os.ReadFile(filepath.Join(dir, "dev-unseal-share"))
	os.WriteFile(filepath.Join(dir2, "dev-unseal-share"), share, 0o600)
	ban2, _ := snapServer(t, server.Config{Dev: true, DevDir: dir2, DevRootToken: ban.RootToken})
	c2, _ := client.New(ban2.Addr, client.WithToken(ban.RootToken))
	decryptAll(t, c2, samples)
}

// TestSnapshotInspectRefusesDamage: inspect exits 1 on a damaged file.
func TestSnapshotInspectRefusesDamage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.snap")
	os.WriteFile(p, []byte("COFFSNAP\x00\x01\x00\x050.1.0\x00\x05bbolt"), 0o600)
	if code, _, errOut := runCLI(t, "", "operator", "snapshot", "inspect", p); code != 1 || !strings.Contains(errOut, "truncated") {
		t.Errorf("inspect of a damaged file: exit %d: %s", code, errOut)
	}
}

// TestMigrateBoltToEtcd moves an installation with 10,000 keys from its
// bbolt file to a real 3-member etcd cluster: the first run is
// interrupted, the second resumes and finishes (skipping what is there),
// and a server on the etcd store, unsealed with the same share, lists
// every key and decrypts every ciphertext made before. Then etcd -> bbolt
// back, and a copy onto a different target is refused without --force.
func TestMigrateBoltToEtcd(t *testing.T) {
	const nKeys = 10000
	ctx := context.Background()
	dir := t.TempDir()
	ban, stop := snapServer(t, server.Config{Dev: true, DevDir: dir})
	c, _ := client.New(ban.Addr, client.WithToken(ban.RootToken))
	samples := makeSamples(t, c, 5)
	stop()

	// The bulk of the keys through the key service itself (no HTTP, no
	// audit), many at a time so bbolt commits them in groups.
	start := time.Now()
	boltPath := filepath.Join(dir, "coffer.db")
	share, err := os.ReadFile(filepath.Join(dir, "dev-unseal-share"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := bolt.Open(boltPath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := sys.New(barrier.New(store), nil)
	if _, err := s.Unseal(ctx, strings.TrimSpace(string(share))); err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= nKeys-int64(len(samples)) {
				if _, err := s.Keys.Create(ctx, keys.CreateRequest{Description: "bulk"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.Seal()
	store.Close()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d keys created through the key service in %s", nKeys-len(samples), time.Since(start).Round(time.Millisecond))

	cluster := etcdtest.Start(t, 3)
	eps := strings.Join(cluster.Endpoints(), ",")
	const prefix = "/coffer-migrated"
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	countEtcd := func() int64 {
		r, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return r.Count
	}

	// First run, interrupted once a third is copied.
	start = time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	go func() {
		for runCtx.Err() == nil {
			if countEtcd() >= nKeys/3 {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var outBuf, errBuf strings.Builder
	code := run(runCtx, []string{"operator", "migrate", "--from", "bbolt:" + boltPath, "--to", "etcd:" + eps, "--etcd-prefix", prefix},
		strings.NewReader(""), &outBuf, &errBuf)
	cancel()
	partial := countEtcd()
	if code == 0 || partial == 0 || partial >= nKeys {
		t.Fatalf("the interrupted migrate: exit %d with %d of %d entries in etcd: %s", code, partial, nKeys, errBuf.String())
	}

	code, out, errOut := runCLI(t, "", "operator", "migrate", "--from", "bbolt:"+boltPath, "--to", "etcd:"+eps, "--etcd-prefix", prefix, "-o", "json")
	if code != 0 {
		t.Fatalf("the resumed migrate: exit %d: %s", code, errOut)
	}
	var res struct {
		Entries, Copied, Skipped uint64
		Verified                 bool
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	// A batch in flight when the first run was cancelled may still have
	// been committed: it is found there and skipped.
	if res.Skipped < uint64(partial) || res.Skipped > uint64(partial)+64 || res.Copied+res.Skipped != res.Entries || res.Entries < nKeys || !res.Verified {
		t.Fatalf("the resumed migrate printed %s (%d entries were there)", out, partial)
	}
	t.Logf("migrated %d entries to a 3-member etcd in two runs (%d skipped on resume) in %s", res.Entries, res.Skipped, time.Since(start).Round(time.Millisecond))

	// A server on the etcd store.
	var cfg server.Config
	cfg.Storage.Etcd = &server.EtcdConfig{Endpoints: cluster.Endpoints(), Prefix: prefix}
	cfg.DataDir = t.TempDir()
	cfg.RotationCheckInterval = "1h"
	ban2, stop2 := snapServer(t, cfg)
	c2, _ := client.New(ban2.Addr, client.WithToken(ban.RootToken))
	if st, err := c2.Unseal(ctx, client.UnsealRequest{Share: strings.TrimSpace(string(share))}); err != nil || st.Sealed {
		t.Fatalf("unseal the etcd server: %+v, %v", st, err)
	}
	// A replica serves credentials once its watch proves its caches fresh
	// (internal/sys, follow.go); loading 10,000 keys takes a moment.
	unsealed := time.Now()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := c2.Decrypt(ctx, client.DecryptRequest{Ciphertext: samples[0].ct})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "replica_stale") || time.Now().After(deadline) {
			t.Fatalf("decrypt on the etcd server: %v", err)
		}
	}
	t.Logf("the etcd server served %s after its unseal", time.Since(unsealed).Round(time.Millisecond))
	decryptAll(t, c2, samples)
	keys, err := c2.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.Keys) != nKeys {
		t.Fatalf("the server on etcd lists %d keys, want %d", len(keys.Keys), nKeys)
	}

	// A snapshot of the etcd store over HTTP, restored into another
	// prefix; a restore onto the prefix the server runs on is refused.
	t.Setenv("COFFER_ADDR", ban2.Addr)
	t.Setenv("COFFER_TOKEN", ban.RootToken)
	snap := filepath.Join(t.TempDir(), "etcd.snap")
	start = time.Now()
	code, out, errOut = runCLI(t, "", "operator", "snapshot", "save", snap, "-o", "json")
	var saved snapshotFileInfo
	if code != 0 || json.Unmarshal([]byte(out), &saved) != nil || saved.Backend != "etcd" || saved.Count < res.Entries {
		t.Fatalf("snapshot save from the etcd server: exit %d: %s%s", code, out, errOut)
	}
	t.Logf("snapshot save over HTTP from the server on etcd: %d entries, %d bytes in %s", saved.Count, saved.Bytes, time.Since(start).Round(time.Millisecond))
	live := writeConfig(t, fmt.Sprintf("storage:\n  etcd:\n    endpoints: [%s]\n    prefix: %s\ndata_dir: %s\n", eps, prefix, t.TempDir()))
	code, _, errOut = runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", live, "--force", "--yes")
	if code != 1 || !strings.Contains(errOut, "replicas are running") {
		t.Fatalf("restore onto the prefix a server runs on: exit %d: %s", code, errOut)
	}
	stop2()
	other := writeConfig(t, fmt.Sprintf("storage:\n  etcd:\n    endpoints: [%s]\n    prefix: /coffer-restored\ndata_dir: %s\n", eps, t.TempDir()))
	start = time.Now()
	code, out, errOut = runCLI(t, "", "operator", "snapshot", "restore", snap, "--config", other, "--yes")
	if code != 0 || !strings.Contains(out, "Verified:") {
		t.Fatalf("restore into another etcd prefix: exit %d: %s%s", code, out, errOut)
	}
	t.Logf("snapshot restore into an empty etcd prefix, verified: %s", time.Since(start).Round(time.Millisecond))

	// And back: etcd -> a new bbolt file, then a server there.
	dir3 := t.TempDir()
	code, out, errOut = runCLI(t, "", "operator", "migrate", "--from", "etcd:"+eps, "--etcd-prefix", prefix, "--to", "bbolt:"+filepath.Join(dir3, "coffer.db"))
	if code != 0 || !strings.Contains(out, "Verified:") {
		t.Fatalf("migrate etcd -> bbolt: exit %d: %s%s", code, out, errOut)
	}
	os.WriteFile(filepath.Join(dir3, "dev-unseal-share"), share, 0o600)
	ban3, _ := snapServer(t, server.Config{Dev: true, DevDir: dir3, DevRootToken: ban.RootToken})
	c3, _ := client.New(ban3.Addr, client.WithToken(ban.RootToken))
	decryptAll(t, c3, samples)

	// A target that holds something else is refused, and left alone.
	if _, err := cli.Put(ctx, prefix+"/keys/not-from-this-source", "x"); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, "", "operator", "migrate", "--from", "bbolt:"+boltPath, "--to", "etcd:"+eps, "--etcd-prefix", prefix)
	if code != 1 || !strings.Contains(errOut, "not-from-this-source") || !strings.Contains(errOut, "--force") {
		t.Errorf("migrate onto a target with other keys: exit %d: %s", code, errOut)
	}
	if countEtcd() != int64(res.Entries)+1 {
		t.Errorf("the refused migrate changed the target")
	}
}

// TestMigrateArguments: what migrate refuses before it touches a store.
func TestMigrateArguments(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--to", "etcd:http://127.0.0.1:1"}, 2, "--from and --to are required"},
		{[]string{"--from", "zip:x", "--to", "etcd:http://127.0.0.1:1"}, 2, "want bbolt:PATH or etcd:URL"},
		{[]string{"--from", "etcd:", "--to", "bbolt:x"}, 2, "want bbolt:PATH or etcd:URL"},
		{[]string{"--from", "etcd:http://a:2379", "--to", "etcd:http://b:2379"}, 2, "both etcd"},
		{[]string{"--from", "bbolt:" + missing, "--to", "bbolt:" + dir + "/./missing.db"}, 2, "the same file"},
		{[]string{"--from", "bbolt:" + missing, "--to", "bbolt:" + filepath.Join(dir, "to.db")}, 1, "no such file"},
		{[]string{"--from", "bbolt:" + missing, "--to", "bbolt:" + filepath.Join(dir, "to.db"), "--force"}, 2, "--yes"},
	} {
		code, _, errOut := runCLI(t, "", append([]string{"operator", "migrate"}, c.args...)...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("migrate %v: exit %d: %s, want exit %d and %q", c.args, code, errOut, c.code, c.msg)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a missing source file was created")
	}
}

// TestSaveVerifiedRefusesBadDownloads: a download cut short, or one whose
// checksum is not the one the server announced, leaves no file behind.
func TestSaveVerifiedRefusesBadDownloads(t *testing.T) {
	store, err := bolt.Open(filepath.Join(t.TempDir(), "coffer.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Apply(context.Background(), storagePut("keys/a", "v"), storagePut("keys/b", "w")); err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	sum, err := snapshot.Save(context.Background(), store, &buf, snapshot.SaveOptions{CofferVersion: sys.Version})
	if err != nil {
		t.Fatal(err)
	}
	data := buf.String()
	dir := t.TempDir()
	path := filepath.Join(dir, "x.snap")
	for name, c := range map[string]struct{ data, announced, msg string }{
		"truncated":      {data[:len(data)-10], sum.Checksum, "truncated"},
		"other checksum": {data, strings.Repeat("0", 64), "not the"},
	} {
		if _, err := saveVerified(path, strings.NewReader(c.data), c.announced); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v", name, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("%s: files left behind: %v", name, entries)
		}
	}
	if got, err := saveVerified(path, strings.NewReader(data), sum.Checksum); err != nil || got.Checksum != sum.Checksum {
		t.Fatalf("a good download: %+v, %v", got, err)
	}
}

func storagePut(k, v string) storage.Op { return storage.Put(k, []byte(v)) }
