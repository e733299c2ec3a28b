package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

func openBolt(t *testing.T) *bolt.Backend {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "coffer.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// fill writes n entries, a few per batch so revisions differ.
func fill(t *testing.T, b storage.Backend, n int, prefix string) map[string][]byte {
	t.Helper()
	want := make(map[string][]byte, n)
	var ops []storage.Op
	for i := range n {
		k := fmt.Sprintf("%s%05d", prefix, i)
		v := bytes.Repeat([]byte{byte(i)}, i%97)
		want[k] = v
		ops = append(ops, storage.Put(k, v))
		if len(ops) == 7 || i == n-1 {
			if err := b.Apply(context.Background(), ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	return want
}

func contents(t *testing.T, b storage.Backend) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	keys, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string][]byte, len(keys))
	for _, k := range keys {
		e, err := b.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		got[k] = e.Value
	}
	return got
}

func sameContents(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
			t.Fatalf("entry %q: %x (present %v), want %x", k, g, ok, v)
		}
	}
}

func saveFile(t *testing.T, src storage.Backend) (string, Summary) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := Save(context.Background(), src, f, SaveOptions{CofferVersion: "0.14.0", Backend: "bbolt"})
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

func restoreFile(t *testing.T, path string, dst storage.Backend, opts RestoreOptions) (RestoreResult, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if opts.CofferVersion == "" {
		opts.CofferVersion = "0.14.0"
	}
	return Restore(context.Background(), f, dst, opts)
}

func TestSaveRestoreBolt(t *testing.T) {
	src := openBolt(t)
	want := fill(t, src, 500, "keys/")
	path, sum := saveFile(t, src)
	if sum.Count != 500 || sum.Revision == 0 || sum.Backend != "bbolt" {
		t.Fatalf("summary %+v", sum)
	}
	fi, _ := os.Stat(path)
	if sum.Bytes != fi.Size() {
		t.Errorf("summary says %d bytes, the file has %d", sum.Bytes, fi.Size())
	}
	data, _ := os.ReadFile(path)
	if v, err := Verify(bytes.NewReader(data), ReadOptions{}); err != nil || v != sum {
		t.Errorf("Save's summary %+v, Verify's %+v (%v)", sum, v, err)
	}
	dst := openBolt(t)
	res, err := restoreFile(t, path, dst, RestoreOptions{batch: batchLimits{ops: 9}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.Written != 500 || res.Deleted != 0 || res.Snapshot.Digest != sum.Digest {
		t.Errorf("result %+v", res)
	}
	sameContents(t, contents(t, dst), want)
}

func TestRestoreRefusesNonEmpty(t *testing.T) {
	src := openBolt(t)
	want := fill(t, src, 20, "keys/")
	path, _ := saveFile(t, src)

	dst := openBolt(t)
	if err := dst.Apply(context.Background(), storage.Put("tokens/stale", []byte("old"))); err != nil {
		t.Fatal(err)
	}
	_, err := restoreFile(t, path, dst, RestoreOptions{})
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore onto a non-empty store: %v", err)
	}
	sameContents(t, contents(t, dst), map[string][]byte{"tokens/stale": []byte("old")})

	res, err := restoreFile(t, path, dst, RestoreOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 1 || !res.Verified {
		t.Errorf("result %+v", res)
	}
	sameContents(t, contents(t, dst), want)
}

func TestRestoreWritesNothingFromABadFile(t *testing.T) {
	src := openBolt(t)
	fill(t, src, 50, "keys/")
	path, _ := saveFile(t, src)
	data, _ := os.ReadFile(path)
	data[len(data)-45] ^= 1 // in the last record's value (the trailer is 41 bytes)
	os.WriteFile(path, data, 0o600)

	dst := openBolt(t)
	if _, err := restoreFile(t, path, dst, RestoreOptions{}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("restore of a damaged file: %v", err)
	}
	if got := contents(t, dst); len(got) != 0 {
		t.Fatalf("a damaged snapshot wrote %d entries", len(got))
	}
}

func TestRestoreRefusesNewerVersion(t *testing.T) {
	src := openBolt(t)
	fill(t, src, 3, "keys/")
	path, _ := saveFile(t, src) // written as 0.14.0
	dst := openBolt(t)
	_, err := restoreFile(t, path, dst, RestoreOptions{CofferVersion: "0.13.2"})
	if !errors.Is(err, ErrNewerVersion) {
		t.Fatalf("restore by an older Coffer: %v", err)
	}
	if got := contents(t, dst); len(got) != 0 {
		t.Fatalf("wrote %d entries", len(got))
	}
}

// racingBackend writes a key of the snapshot itself just before the
// restore's first batch, as a server still running on the store would.
type racingBackend struct {
	storage.Backend
	key  string
	done bool
}

func (r *racingBackend) Apply(ctx context.Context, ops ...storage.Op) error {
	if !r.done && len(ops) > 0 && ops[0].Kind == storage.OpPut {
		r.done = true
		if err := r.Backend.Apply(ctx, storage.Put(r.key, []byte("server write"))); err != nil {
			return err
		}
	}
	return r.Backend.Apply(ctx, ops...)
}

func TestRestoreFailsOnAConcurrentWriter(t *testing.T) {
	src := openBolt(t)
	fill(t, src, 10, "keys/")
	path, _ := saveFile(t, src)
	dst := &racingBackend{Backend: openBolt(t), key: "keys/00003"}
	_, err := restoreFile(t, path, dst, RestoreOptions{})
	if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), "server still running") {
		t.Fatalf("restore beside a writer: %v", err)
	}
}

// lossyBackend acknowledges a batch but drops its last op: the read-back
// verification must notice.
type lossyBackend struct{ storage.Backend }

func (l lossyBackend) Apply(ctx context.Context, ops ...storage.Op) error {
	if len(ops) > 1 {
		ops = ops[:len(ops)-1]
	}
	return l.Backend.Apply(ctx, ops...)
}

func TestRestoreVerifiesReadBack(t *testing.T) {
	src := openBolt(t)
	fill(t, src, 10, "keys/")
	path, _ := saveFile(t, src)
	_, err := restoreFile(t, path, lossyBackend{openBolt(t)}, RestoreOptions{})
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "reads back 9 entries") {
		t.Fatalf("restore into a store that loses a write: %v", err)
	}
	// And Copy.
	_, err = Copy(context.Background(), src, lossyBackend{openBolt(t)}, CopyOptions{})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("copy into a store that loses a write: %v", err)
	}
}

// plainBackend hides every optional interface of the backend it holds.
type plainBackend struct{ storage.Backend }

// TestViewOfWithoutSnapshotter: a backend without a consistent view is
// listed and read; the copy is the same.
func TestViewOfWithoutSnapshotter(t *testing.T) {
	inner := inmem.New()
	want := fill(t, inner, 30, "iam/")
	src := plainBackend{inner}
	dst := inmem.New()
	res, err := Copy(context.Background(), src, dst, CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 30 || res.SourceRevision != 0 {
		t.Errorf("result %+v", res)
	}
	sameContents(t, contents(t, dst), want)
}

func TestCopyResumes(t *testing.T) {
	src := openBolt(t)
	want := fill(t, src, 100, "keys/")
	dst := openBolt(t)

	// Interrupt after the third batch of ten.
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Copy(ctx, src, dst, CopyOptions{batch: batchLimits{ops: 10}, Progress: func(written, _ uint64) {
		if written >= 30 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy: %v", err)
	}
	if n := len(contents(t, dst)); n != 30 {
		t.Fatalf("the interrupted copy left %d entries, want 30", n)
	}
	res, err := Copy(context.Background(), src, dst, CopyOptions{batch: batchLimits{ops: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped != 30 || res.Copied != 70 || res.Entries != 100 || !res.Verified {
		t.Errorf("resumed copy: %+v", res)
	}
	sameContents(t, contents(t, dst), want)

	// A third run finds nothing to do.
	res, err = Copy(context.Background(), src, dst, CopyOptions{})
	if err != nil || res.Skipped != 100 || res.Copied != 0 {
		t.Errorf("a finished copy run again: %+v, %v", res, err)
	}
}

func TestCopyRefusesADifferentTarget(t *testing.T) {
	ctx := context.Background()
	src := openBolt(t)
	want := fill(t, src, 20, "keys/")
	dst := openBolt(t)
	fill(t, dst, 5, "keys/") // same keys 0..4 with the same values
	if err := dst.Apply(ctx, storage.Put("keys/00002", []byte("another installation"))); err != nil {
		t.Fatal(err)
	}
	before := contents(t, dst)
	_, err := Copy(ctx, src, dst, CopyOptions{})
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), `"keys/00002"`) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("copy onto a different value: %v", err)
	}
	sameContents(t, contents(t, dst), before) // nothing written

	res, err := Copy(ctx, src, dst, CopyOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Overwritten != 1 || res.Skipped != 4 || res.Copied != 15 {
		t.Errorf("forced copy: %+v", res)
	}
	sameContents(t, contents(t, dst), want)
}

func TestCopyRefusesExtraKeys(t *testing.T) {
	ctx := context.Background()
	src := openBolt(t)
	want := fill(t, src, 10, "keys/")
	dst := openBolt(t)
	if err := dst.Apply(ctx, storage.Put("tokens/zzz", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	_, err := Copy(ctx, src, dst, CopyOptions{})
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "tokens/zzz") {
		t.Fatalf("copy onto extra keys: %v", err)
	}
	if n := len(contents(t, dst)); n != 1 {
		t.Fatalf("the refused copy wrote: %d entries", n)
	}
	res, err := Copy(ctx, src, dst, CopyOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 1 || res.Copied != 10 {
		t.Errorf("forced copy: %+v", res)
	}
	sameContents(t, contents(t, dst), want)
}

// TestCopyConditionalOnTarget: a value changed in the target between
// Copy's read and its write (a server running on it) fails the copy.
func TestCopyConditionalOnTarget(t *testing.T) {
	ctx := context.Background()
	src := openBolt(t)
	fill(t, src, 10, "keys/")
	inner := openBolt(t)
	if err := inner.Apply(ctx, storage.Put("keys/00004", []byte("differs"))); err != nil {
		t.Fatal(err)
	}
	dst := &racingBackend{Backend: inner, key: "keys/00004"}
	_, err := Copy(ctx, src, dst, CopyOptions{Force: true})
	if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), "server running") {
		t.Fatalf("copy beside a writer: %v", err)
	}
}

// swappingFile serves one snapshot until it is rewound, then another: the
// file changed between Restore's verification and its write.
type swappingFile struct {
	*bytes.Reader
	next []byte
}

func (s *swappingFile) Seek(off int64, whence int) (int64, error) {
	if s.next != nil {
		s.Reader, s.next = bytes.NewReader(s.next), nil
	}
	return s.Reader.Seek(off, whence)
}

func TestRestoreNoticesAFileChangedMeanwhile(t *testing.T) {
	a, b := openBolt(t), openBolt(t)
	fill(t, a, 10, "keys/")
	fill(t, b, 10, "other/")
	pa, _ := saveFile(t, a)
	pb, _ := saveFile(t, b)
	da, _ := os.ReadFile(pa)
	db, _ := os.ReadFile(pb)
	_, err := Restore(context.Background(), &swappingFile{bytes.NewReader(da), db}, openBolt(t), RestoreOptions{CofferVersion: "0.14.0"})
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "changed between its verification") {
		t.Fatalf("restore of a file swapped after verification: %v", err)
	}
}
