package bolt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		return open(t, filepath.Join(t.TempDir(), "coffer.db"))
	})
}

// open opens path and fails the test on error. The caller closes it.
func open(t *testing.T, path string) *bolt.Backend {
	t.Helper()
	b, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return b
}

func mustClose(t *testing.T, b *bolt.Backend) {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "coffer.db")

	b := open(t, path)
	if err := b.Apply(ctx,
		storage.Put("keys/a", []byte("alpha")),
		storage.Put("keys/b", []byte("beta")),
		storage.Put("core/keyring", []byte{0, 1, 2}),
	); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, storage.Delete("keys/b")); err != nil {
		t.Fatal(err)
	}
	before, err := b.Get(ctx, "keys/a")
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, b)

	b = open(t, path)
	defer mustClose(t, b)
	after, err := b.Get(ctx, "keys/a")
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if !bytes.Equal(after.Value, before.Value) || after.Revision != before.Revision {
		t.Errorf("after reopen got %q@%d, want %q@%d", after.Value, after.Revision, before.Value, before.Revision)
	}
	if _, err := b.Get(ctx, "keys/b"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("deleted key after reopen: %v, want ErrNotFound", err)
	}
	keys, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"core/keyring", "keys/a"}; fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("List after reopen = %q, want %q", keys, want)
	}

	// The revision counter survived too: the delete consumed a revision,
	// so a new write lands past it rather than reusing one.
	if err := b.Apply(ctx, storage.Put("keys/b", []byte("again"))); err != nil {
		t.Fatal(err)
	}
	e, err := b.Get(ctx, "keys/b")
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision <= before.Revision+1 {
		t.Errorf("write after reopen got revision %d, want > %d", e.Revision, before.Revision+1)
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.db")
	b := open(t, path)
	defer mustClose(t, b)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("storage file mode = %v, want 0600", got)
	}
}

func TestLockedByAnotherOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.db")
	first := open(t, path)

	for _, timeout := range []time.Duration{100 * time.Millisecond, -1} {
		start := time.Now()
		second, err := bolt.Open(path, bolt.Options{LockTimeout: timeout})
		elapsed := time.Since(start)
		if err == nil {
			second.Close()
			t.Fatalf("second Open (LockTimeout %v) of an open file succeeded", timeout)
		}
		if !errors.Is(err, bolt.ErrLocked) {
			t.Errorf("second Open: %v, want ErrLocked", err)
		}
		if want := fmt.Sprintf("storage file %s is locked by another process", path); err.Error() != want {
			t.Errorf("second Open error = %q, want %q", err, want)
		}
		if elapsed > 2*time.Second {
			t.Errorf("second Open (LockTimeout %v) took %v to fail", timeout, elapsed)
		}
	}

	// The failed attempts did not disturb the holder or leave a lock behind.
	if err := first.Apply(context.Background(), storage.Put("k", []byte("v"))); err != nil {
		t.Fatalf("Apply on the first handle: %v", err)
	}
	mustClose(t, first)
	again, err := bolt.Open(path, bolt.Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	mustClose(t, again)
}

// validFile returns the bytes of a storage file holding some data.
func validFile(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "valid.db")
	b := open(t, path)
	for i := range 200 {
		if err := b.Apply(context.Background(), storage.Put(fmt.Sprintf("keys/%03d", i), bytes.Repeat([]byte{byte(i)}, 300))); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, b)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// overwriteTree returns valid with every page but the meta and freelist pages
// replaced by noise, so that bbolt.Open succeeds and the first transaction
// meets the damage.
func overwriteTree(t *testing.T, valid, noise []byte) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, valid, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	keep := map[int]bool{0: true, 1: true}
	pageSize := db.Info().PageSize
	err = db.View(func(tx *bbolt.Tx) error {
		for id := 2; id*pageSize < len(valid); id++ {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info != nil && info.Type == "freelist" {
				for i := 0; i <= info.OverflowCount; i++ {
					keep[id+i] = true
				}
			}
		}
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	if len(keep) < 3 {
		t.Fatal("no freelist page found")
	}
	out := bytes.Clone(valid)
	for id := 0; id*pageSize < len(out); id++ {
		if !keep[id] {
			copy(out[id*pageSize:(id+1)*pageSize], noise[id*pageSize:])
		}
	}
	return out
}

func TestCorruptFile(t *testing.T) {
	valid := validFile(t)
	const pageSize = 4096 // bbolt's two meta pages come first
	noise := make([]byte, len(valid))
	rand.Read(noise)
	splice := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	tests := []struct {
		name     string
		contents []byte
	}{
		{"few bytes", []byte("hello")},
		{"text file", []byte(strings.Repeat("this is not a database\n", 1000))},
		{"random bytes", noise[:64<<10]},
		{"zeros", make([]byte, 64<<10)},
		{"both meta pages zeroed", splice(make([]byte, 2*pageSize), valid[2*pageSize:])},
		{"truncated after meta pages", valid[:2*pageSize+100]},
		{"pages after meta overwritten", splice(valid[:2*pageSize], noise[2*pageSize:])},
		{"tree pages overwritten", overwriteTree(t, valid, noise)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "coffer.db")
			if err := os.WriteFile(path, tc.contents, 0o600); err != nil {
				t.Fatal(err)
			}
			// Twice: a failed Open must not leave the file locked.
			for range 2 {
				b, err := bolt.Open(path, bolt.Options{LockTimeout: 100 * time.Millisecond})
				if err == nil {
					b.Close()
					t.Fatal("Open of a corrupt file succeeded")
				}
				if errors.Is(err, bolt.ErrLocked) {
					t.Fatalf("Open of a corrupt file: %v (lock leaked by an earlier attempt)", err)
				}
				if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "not a valid Coffer storage file") {
					t.Errorf("Open error = %q, want it to name the file and say it is not valid", msg)
				}
			}
		})
	}
}

// TestForeignLayout covers files bbolt can read that this package did not
// write, or wrote in a way it no longer understands.
func TestForeignLayout(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(tx *bbolt.Tx) error
		openErr string // substring of Open's error, or "" if Open succeeds
		getErr  string // substring of Get("k")'s error
	}{
		{
			name: "newer layout version",
			mutate: func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("format"), binary.BigEndian.AppendUint64(nil, 99))
			},
			openErr: "layout version 99",
		},
		{
			name: "malformed revision counter",
			mutate: func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("revision"), []byte("x"))
			},
			openErr: "malformed revision counter",
		},
		{
			name: "entry shorter than its revision header",
			mutate: func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("data")).Put([]byte("k"), []byte{1, 2})
			},
			getErr: "shorter than its revision header",
		},
		{
			// Restarting the counter at 0 would hand out revisions that
			// existing entries already have, breaking compare-and-swap.
			name: "revision counter lost while data remains",
			mutate: func(tx *bbolt.Tx) error {
				if err := tx.Bucket([]byte("data")).Put([]byte("k"), binary.BigEndian.AppendUint64(nil, 7)); err != nil {
					return err
				}
				return tx.Bucket([]byte("meta")).Delete([]byte("revision"))
			},
			openErr: "revision counter is missing",
		},
		{
			name: "entry with zero revision",
			mutate: func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("data")).Put([]byte("k"), make([]byte, 8))
			},
			getErr: "revision 0",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "coffer.db")
			seed := open(t, path)
			if err := seed.Apply(context.Background(), storage.Put("seed", nil)); err != nil {
				t.Fatal(err)
			}
			mustClose(t, seed)
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.mutate); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			b, err := bolt.Open(path, bolt.Options{})
			if tc.openErr != "" {
				if err == nil {
					b.Close()
					t.Fatalf("Open succeeded, want error containing %q", tc.openErr)
				}
				if !strings.Contains(err.Error(), tc.openErr) || !strings.Contains(err.Error(), "not a valid Coffer storage file") {
					t.Errorf("Open error = %q, want it to contain %q", err, tc.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer mustClose(t, b)
			ctx := context.Background()
			_, err = b.Get(ctx, "k")
			if err == nil || !strings.Contains(err.Error(), tc.getErr) {
				t.Errorf("Get error = %v, want it to contain %q", err, tc.getErr)
			}
			// A conditional write reads the entry too and must fail the
			// same way, not treat it as a conflict.
			err = b.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: "k", IfRevision: 1})
			if err == nil || errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), tc.getErr) {
				t.Errorf("Apply error = %v, want it to contain %q", err, tc.getErr)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"empty path", "", "empty storage file path"},
		{"missing directory", filepath.Join(dir, "no", "such", "dir", "coffer.db"), "no such file or directory"},
		{"directory", dir, "open storage file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bolt.Open(tc.path, bolt.Options{})
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestEmptyFileIsInitialized covers a file created ahead of time (by an
// installer, say) with the right permissions and no contents.
func TestEmptyFileIsInitialized(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b := open(t, path)
	defer mustClose(t, b)
	if err := b.Apply(context.Background(), storage.Put("k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
}

func TestCloseTwice(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "coffer.db"))
	mustClose(t, b)
	mustClose(t, b)
}

func BenchmarkBoltApply(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "coffer.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	value := bytes.Repeat([]byte{0xab}, 256)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := db.Apply(ctx, storage.Put(fmt.Sprintf("keys/%08d", i%1000), value)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkBoltGet(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "coffer.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	value := bytes.Repeat([]byte{0xab}, 256)
	const n = 1000
	ops := make([]storage.Op, n)
	for i := range ops {
		ops[i] = storage.Put(fmt.Sprintf("keys/%08d", i), value)
	}
	if err := db.Apply(ctx, ops...); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := db.Get(ctx, fmt.Sprintf("keys/%08d", i%n)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
