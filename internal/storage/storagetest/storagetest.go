// Package storagetest is the conformance suite every storage.Backend must
// pass. A backend's own test calls Run with a function that opens a fresh,
// empty instance:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Backend {
//			return inmem.New()
//		})
//	}
//
// The suite pins down the contract callers rely on and that the interface
// alone cannot express: revisions that never repeat for a key (even across a
// delete and re-create), all-or-nothing batches, IfRevision semantics, lexical
// prefix listing, defensive copies of values, and safe concurrent
// compare-and-swap.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
)

// Run runs the conformance suite against the backends returned by open.
//
// Every subtest calls open once and runs in parallel with the others, so open
// must be safe for concurrent use and must return a new, empty backend that
// shares no keys with any other backend it returns (an etcd backend, for
// example, would use a unique key namespace per call). Run closes each
// backend when its subtest ends; open should register only cleanup of its own
// resources (t.TempDir, for instance, cleans itself up).
func Run(t *testing.T, open func(t *testing.T) storage.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"Overwrite", testOverwrite},
		{"RevisionIncreases", testRevisionIncreases},
		{"List", testList},
		{"ListAfterDelete", testListAfterDelete},
		{"ApplyConditions", testApplyConditions},
		{"ApplyAtomic", testApplyAtomic},
		{"BatchRevisions", testBatchRevisions},
		{"EmptyBatch", testEmptyBatch},
		{"Delete", testDelete},
		{"ValuesAreCopies", testValuesAreCopies},
		{"ConcurrentCAS", testConcurrentCAS},
		{"CancelledContext", testCancelledContext},
		{"EmptyKey", testEmptyKey},
		{"InvalidOpKind", testInvalidOpKind},
		{"UseAfterClose", testUseAfterClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := &tracked{Backend: open(t)}
			t.Cleanup(func() {
				if b.closed {
					return
				}
				if err := b.Backend.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

// tracked remembers whether a test closed the backend itself, so Run does not
// close it a second time.
type tracked struct {
	storage.Backend
	closed bool
}

func (b *tracked) Close() error {
	b.closed = true
	return b.Backend.Close()
}

// absent marks, in a table of expected values, a key that must not exist.
var absent []byte

func mustApply(t *testing.T, b storage.Backend, ops ...storage.Op) {
	t.Helper()
	if err := b.Apply(context.Background(), ops...); err != nil {
		t.Fatalf("Apply(%s): %v", describe(ops), err)
	}
}

func mustPut(t *testing.T, b storage.Backend, key, value string) int64 {
	t.Helper()
	mustApply(t, b, storage.Put(key, []byte(value)))
	return mustGet(t, b, key).Revision
}

func mustGet(t *testing.T, b storage.Backend, key string) storage.Entry {
	t.Helper()
	e, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if e.Key != key {
		t.Errorf("Get(%q).Key = %q", key, e.Key)
	}
	if e.Revision <= 0 {
		t.Errorf("Get(%q).Revision = %d, want > 0", key, e.Revision)
	}
	return e
}

func mustList(t *testing.T, b storage.Backend, prefix string) []string {
	t.Helper()
	keys, err := b.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

// wantValue checks that key holds want, or does not exist when want is nil.
func wantValue(t *testing.T, b storage.Backend, key string, want []byte) {
	t.Helper()
	e, err := b.Get(context.Background(), key)
	switch {
	case want == nil && errors.Is(err, storage.ErrNotFound):
	case want == nil && err == nil:
		t.Errorf("Get(%q) = %q, want ErrNotFound", key, e.Value)
	case want == nil:
		t.Errorf("Get(%q): %v, want ErrNotFound", key, err)
	case err != nil:
		t.Errorf("Get(%q): %v, want %q", key, err, want)
	case !bytes.Equal(e.Value, want):
		t.Errorf("Get(%q) = %q, want %q", key, e.Value, want)
	}
}

// wantRejected checks that err is a failure that is neither nil nor one of
// the storage sentinels a caller would misread as "not found" or "retry".
func wantRejected(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: got nil error, want one", what)
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrConflict):
		t.Errorf("%s: got %v, want a validation error", what, err)
	}
}

func describe(ops []storage.Op) string {
	var buf bytes.Buffer
	for i, op := range ops {
		if i > 0 {
			buf.WriteString(", ")
		}
		kind := map[storage.OpKind]string{storage.OpPut: "put", storage.OpDelete: "delete", storage.OpCheck: "check"}[op.Kind]
		if kind == "" {
			kind = fmt.Sprintf("kind(%d)", op.Kind)
		}
		fmt.Fprintf(&buf, "%s %q if %d", kind, op.Key, op.IfRevision)
	}
	return buf.String()
}

func testGetMissing(t *testing.T, b storage.Backend) {
	ctx := context.Background()
	mustApply(t, b, storage.Put("dir/child", []byte("x")), storage.Put("ab", []byte("x")))
	for _, key := range []string{"nope", "dir", "dir/", "a", "dir/child/x"} {
		_, err := b.Get(ctx, key)
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", key, err)
		}
	}
}

func testPutGet(t *testing.T, b storage.Backend) {
	large := make([]byte, 256<<10)
	for i := range large {
		large[i] = byte(i * 7)
	}
	tests := []struct {
		name  string
		key   string
		value []byte
	}{
		{"text", "keys/text", []byte("hello")},
		{"empty", "keys/empty", []byte{}},
		{"nil", "keys/nil", nil},
		{"binary", "keys/binary", []byte{0, 1, 0, 0xff, 0}},
		{"large", "keys/large", large},
		{"deep key", "a/b/c/d/e/f", []byte("deep")},
		{"key with unusual bytes", "keys/ünï cøde\x00\xff", []byte("odd")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mustApply(t, b, storage.Put(tc.key, tc.value))
			e := mustGet(t, b, tc.key)
			if !bytes.Equal(e.Value, tc.value) {
				t.Errorf("Get(%q) = %d bytes, want %d bytes equal to what was put", tc.key, len(e.Value), len(tc.value))
			}
		})
	}
}

func testOverwrite(t *testing.T, b storage.Backend) {
	mustPut(t, b, "k", "first value, longer than the second")
	mustPut(t, b, "k", "second")
	wantValue(t, b, "k", []byte("second"))
}

func testRevisionIncreases(t *testing.T, b storage.Backend) {
	var last int64
	step := func(what string, rev int64) {
		t.Helper()
		if rev <= last {
			t.Errorf("%s: revision %d, want > previous %d", what, rev, last)
		}
		last = rev
	}
	for i := range 5 {
		step(fmt.Sprintf("write %d", i), mustPut(t, b, "k", fmt.Sprint(i)))
		mustPut(t, b, "other", fmt.Sprint(i))
	}
	// Rewriting the same bytes is still a write.
	step("identical rewrite", mustPut(t, b, "k", "4"))

	// A deleted and re-created key must never reuse an old revision, or a
	// stale compare-and-swap would succeed against the new value.
	mustApply(t, b, storage.Delete("k"))
	step("re-create after delete", mustPut(t, b, "k", "again"))

	// Revisions of different keys come from one clock.
	if rev := mustPut(t, b, "fresh", "x"); rev <= last {
		t.Errorf("new key got revision %d, want > %d (last write of another key)", rev, last)
	}
}

func testList(t *testing.T, b storage.Backend) {
	keys := []string{"b", "a/c", "ab", "a/b/c", "a", "a/b", "c/x", "a/\xff", "a0"}
	for _, k := range keys {
		mustPut(t, b, k, "v")
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a", "a/b", "a/b/c", "a/c", "a/\xff", "a0", "ab", "b", "c/x"}},
		{"a", []string{"a", "a/b", "a/b/c", "a/c", "a/\xff", "a0", "ab"}},
		{"a/", []string{"a/b", "a/b/c", "a/c", "a/\xff"}},
		{"a/b", []string{"a/b", "a/b/c"}},
		{"a/b/", []string{"a/b/c"}},
		{"a/b/c", []string{"a/b/c"}},
		{"ab", []string{"ab"}},
		{"b", []string{"b"}},
		{"c/", []string{"c/x"}},
		{"0", nil},
		{"bb", nil},
		{"d", nil},
		{"zzz", nil},
		{"a/b/c/", nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("prefix=%q", tc.prefix), func(t *testing.T) {
			got := mustList(t, b, tc.prefix)
			if !slices.Equal(got, tc.want) {
				t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
		})
	}
}

func testListAfterDelete(t *testing.T, b storage.Backend) {
	if got := mustList(t, b, ""); len(got) != 0 {
		t.Fatalf("List on an empty backend = %q, want nothing", got)
	}
	mustApply(t, b, storage.Put("p/1", nil), storage.Put("p/2", nil), storage.Put("p/3", nil))
	mustApply(t, b, storage.Delete("p/2"))
	if got, want := mustList(t, b, "p/"), []string{"p/1", "p/3"}; !slices.Equal(got, want) {
		t.Errorf("List after delete = %q, want %q", got, want)
	}
	mustApply(t, b, storage.Delete("p/1"), storage.Delete("p/3"))
	if got := mustList(t, b, ""); len(got) != 0 {
		t.Errorf("List after deleting everything = %q, want nothing", got)
	}
}

// testApplyConditions runs each case under its own key prefix. Before a case,
// "exists" has been written twice: rev is its current revision and stale the
// one before. "missing" has never been written.
func testApplyConditions(t *testing.T, b storage.Backend) {
	type revs struct{ rev, stale int64 }
	current := func(r revs) int64 { return r.rev }
	stale := func(r revs) int64 { return r.stale }
	fixed := func(n int64) func(revs) int64 { return func(revs) int64 { return n } }
	type op struct {
		kind  storage.OpKind
		key   string
		value string
		ifRev func(revs) int64
	}
	tests := []struct {
		name     string
		ops      []op
		conflict bool
		want     map[string][]byte // final values; absent = must not exist
	}{
		{
			name: "put if current revision",
			ops:  []op{{storage.OpPut, "exists", "new", current}},
			want: map[string][]byte{"exists": []byte("new")},
		},
		{
			name:     "put if stale revision",
			ops:      []op{{storage.OpPut, "exists", "new", stale}},
			conflict: true,
		},
		{
			name:     "put if future revision",
			ops:      []op{{storage.OpPut, "exists", "new", func(r revs) int64 { return r.rev + 1 }}},
			conflict: true,
		},
		{
			name: "create if not exists",
			ops:  []op{{storage.OpPut, "missing", "new", fixed(0)}},
			want: map[string][]byte{"missing": []byte("new")},
		},
		{
			name:     "create if not exists on existing key",
			ops:      []op{{storage.OpPut, "exists", "new", fixed(0)}},
			conflict: true,
		},
		{
			name:     "put on missing key requiring a revision",
			ops:      []op{{storage.OpPut, "missing", "new", current}},
			conflict: true,
		},
		{
			name: "put any revision",
			ops:  []op{{storage.OpPut, "exists", "new", fixed(storage.AnyRevision)}},
			want: map[string][]byte{"exists": []byte("new")},
		},
		{
			name: "delete if current revision",
			ops:  []op{{storage.OpDelete, "exists", "", current}},
			want: map[string][]byte{"exists": absent},
		},
		{
			name:     "delete if stale revision",
			ops:      []op{{storage.OpDelete, "exists", "", stale}},
			conflict: true,
		},
		{
			name:     "delete existing key if not exists",
			ops:      []op{{storage.OpDelete, "exists", "", fixed(0)}},
			conflict: true,
		},
		{
			name: "delete missing key unconditionally",
			ops:  []op{{storage.OpDelete, "missing", "", fixed(storage.AnyRevision)}},
			want: map[string][]byte{"missing": absent},
		},
		{
			name: "delete missing key if not exists",
			ops:  []op{{storage.OpDelete, "missing", "", fixed(0)}},
			want: map[string][]byte{"missing": absent},
		},
		{
			name:     "delete missing key requiring a revision",
			ops:      []op{{storage.OpDelete, "missing", "", current}},
			conflict: true,
		},
		{
			name: "check current revision guards a put",
			ops:  []op{{storage.OpCheck, "exists", "", current}, {storage.OpPut, "other", "new", fixed(storage.AnyRevision)}},
			want: map[string][]byte{"other": []byte("new")},
		},
		{
			name:     "check stale revision blocks a put",
			ops:      []op{{storage.OpCheck, "exists", "", stale}, {storage.OpPut, "other", "new", fixed(storage.AnyRevision)}},
			conflict: true,
		},
		{
			name: "check not exists on missing key",
			ops:  []op{{storage.OpCheck, "missing", "", fixed(0)}, {storage.OpPut, "other", "new", fixed(storage.AnyRevision)}},
			want: map[string][]byte{"other": []byte("new"), "missing": absent},
		},
		{
			name:     "check not exists on existing key",
			ops:      []op{{storage.OpCheck, "exists", "", fixed(0)}, {storage.OpPut, "other", "new", fixed(storage.AnyRevision)}},
			conflict: true,
		},
		{
			name:     "check revision on missing key",
			ops:      []op{{storage.OpCheck, "missing", "", fixed(1)}, {storage.OpPut, "other", "new", fixed(storage.AnyRevision)}},
			conflict: true,
		},
		{
			name: "check any revision",
			ops:  []op{{storage.OpCheck, "missing", "", fixed(storage.AnyRevision)}},
			want: map[string][]byte{"missing": absent},
		},
		{
			name: "check alone writes nothing",
			ops:  []op{{storage.OpCheck, "exists", "", current}},
		},
		{
			name: "several conditions all hold",
			ops: []op{
				{storage.OpPut, "exists", "new", current},
				{storage.OpPut, "missing", "new", fixed(0)},
				{storage.OpPut, "other", "new", fixed(0)},
			},
			want: map[string][]byte{"exists": []byte("new"), "missing": []byte("new"), "other": []byte("new")},
		},
		{
			name: "last condition fails",
			ops: []op{
				{storage.OpPut, "missing", "new", fixed(0)},
				{storage.OpDelete, "exists", "", fixed(storage.AnyRevision)},
				{storage.OpPut, "other", "new", current},
			},
			conflict: true,
		},
		{
			name: "first condition fails",
			ops: []op{
				{storage.OpCheck, "other", "", fixed(1)},
				{storage.OpPut, "missing", "new", fixed(0)},
				{storage.OpDelete, "exists", "", current},
			},
			conflict: true,
		},
	}
	ctx := context.Background()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("case%02d/", i)
			var r revs
			r.stale = mustPut(t, b, prefix+"exists", "old")
			r.rev = mustPut(t, b, prefix+"exists", "orig")

			ops := make([]storage.Op, len(tc.ops))
			for j, o := range tc.ops {
				ops[j] = storage.Op{Kind: o.kind, Key: prefix + o.key, IfRevision: o.ifRev(r)}
				if o.kind == storage.OpPut {
					ops[j].Value = []byte(o.value)
				}
			}
			err := b.Apply(ctx, ops...)
			switch {
			case tc.conflict && !errors.Is(err, storage.ErrConflict):
				t.Fatalf("Apply(%s) error = %v, want ErrConflict", describe(ops), err)
			case !tc.conflict && err != nil:
				t.Fatalf("Apply(%s): %v", describe(ops), err)
			}

			// A conflict leaves the prefix exactly as it was; otherwise
			// keys not named in want keep their value.
			want := map[string][]byte{"exists": []byte("orig"), "missing": absent, "other": absent}
			if !tc.conflict {
				for k, v := range tc.want {
					want[k] = v
				}
			}
			for k, v := range want {
				wantValue(t, b, prefix+k, v)
			}
			if tc.conflict || bytes.Equal(want["exists"], []byte("orig")) {
				if got := mustGet(t, b, prefix+"exists").Revision; got != r.rev {
					t.Errorf("revision of unchanged key moved from %d to %d", r.rev, got)
				}
			}
		})
	}
}

func testApplyAtomic(t *testing.T, b storage.Backend) {
	rev := mustPut(t, b, "guard", "v")
	mustPut(t, b, "victim", "keep me")
	var ops []storage.Op
	for i := range 50 {
		ops = append(ops, storage.Put(fmt.Sprintf("batch/%02d", i), []byte("x")))
	}
	ops = append(ops, storage.Delete("victim"))
	ops = append(ops, storage.Op{Kind: storage.OpPut, Key: "guard", Value: []byte("w"), IfRevision: rev + 1000})
	if err := b.Apply(context.Background(), ops...); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("Apply with a failing condition: %v, want ErrConflict", err)
	}
	if got := mustList(t, b, "batch/"); len(got) != 0 {
		t.Errorf("failed batch wrote %d keys: %q", len(got), got)
	}
	wantValue(t, b, "victim", []byte("keep me"))
	wantValue(t, b, "guard", []byte("v"))

	// The same batch with a correct condition writes everything.
	ops[len(ops)-1].IfRevision = rev
	mustApply(t, b, ops...)
	if got := mustList(t, b, "batch/"); len(got) != 50 {
		t.Errorf("batch wrote %d keys, want 50", len(got))
	}
	wantValue(t, b, "victim", absent)
	wantValue(t, b, "guard", []byte("w"))
}

// testBatchRevisions checks that the revisions a batch assigns are newer than
// anything before it, so a caller can CAS on any key the batch wrote.
func testBatchRevisions(t *testing.T, b storage.Backend) {
	before := mustPut(t, b, "x", "0")
	mustApply(t, b, storage.Put("x", []byte("1")), storage.Put("y", []byte("1")))
	x, y := mustGet(t, b, "x"), mustGet(t, b, "y")
	if x.Revision <= before || y.Revision <= before {
		t.Errorf("batch revisions x=%d y=%d, want both > %d", x.Revision, y.Revision, before)
	}
	mustApply(t, b,
		storage.Op{Kind: storage.OpPut, Key: "x", Value: []byte("2"), IfRevision: x.Revision},
		storage.Op{Kind: storage.OpPut, Key: "y", Value: []byte("2"), IfRevision: y.Revision},
	)
}

func testEmptyBatch(t *testing.T, b storage.Backend) {
	if err := b.Apply(context.Background()); err != nil {
		t.Errorf("Apply() with no ops: %v", err)
	}
	if got := mustList(t, b, ""); len(got) != 0 {
		t.Errorf("empty batch wrote %q", got)
	}
}

func testDelete(t *testing.T, b storage.Backend) {
	mustPut(t, b, "k", "v")
	mustPut(t, b, "k/child", "v")
	mustApply(t, b, storage.Delete("k"))
	wantValue(t, b, "k", absent)
	// Deleting a key is not deleting a prefix.
	wantValue(t, b, "k/child", []byte("v"))
	// Deleting again, or deleting what never existed, is not an error.
	mustApply(t, b, storage.Delete("k"))
	mustApply(t, b, storage.Delete("never"))
	wantValue(t, b, "never", absent)
}

func testValuesAreCopies(t *testing.T, b storage.Backend) {
	in := []byte("original")
	mustApply(t, b, storage.Put("k", in))
	copy(in, "MUTATED!")
	wantValue(t, b, "k", []byte("original"))

	e := mustGet(t, b, "k")
	copy(e.Value, "MUTATED!")
	e.Value = append(e.Value[:0], "grown past the original length"...)
	wantValue(t, b, "k", []byte("original"))

	// Two reads must not share memory either.
	e1, e2 := mustGet(t, b, "k"), mustGet(t, b, "k")
	e1.Value[0] = 'X'
	if e2.Value[0] != 'o' {
		t.Errorf("two Get results share memory")
	}
}

// testConcurrentCAS increments a counter from many goroutines with
// read-modify-write batches, retrying on conflict, while readers scan. Any
// lost update shows up as a wrong final count.
func testConcurrentCAS(t *testing.T, b storage.Backend) {
	const (
		workers    = 16
		increments = 20
		key        = "counter"
	)
	ctx := context.Background()
	increment := func() error {
		for {
			var n, rev int64
			e, err := b.Get(ctx, key)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				rev = 0
			case err != nil:
				return err
			default:
				rev = e.Revision
				if _, err := fmt.Sscan(string(e.Value), &n); err != nil {
					return fmt.Errorf("bad counter %q: %v", e.Value, err)
				}
			}
			err = b.Apply(ctx,
				storage.Op{Kind: storage.OpPut, Key: key, Value: []byte(fmt.Sprint(n + 1)), IfRevision: rev},
				storage.Put(fmt.Sprintf("log/%06d", n+1), nil),
			)
			if errors.Is(err, storage.ErrConflict) {
				continue
			}
			return err
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := b.List(ctx, "log/"); err != nil {
				errs <- fmt.Errorf("List during writes: %w", err)
				return
			}
			if _, err := b.Get(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
				errs <- fmt.Errorf("Get during writes: %w", err)
				return
			}
		}
	})
	for range workers {
		wg.Go(func() {
			for range increments {
				if err := increment(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	want := fmt.Sprint(workers * increments)
	wantValue(t, b, key, []byte(want))
	// Each increment logged the value it produced; no two produced the same.
	if got := mustList(t, b, "log/"); len(got) != workers*increments {
		t.Errorf("%d distinct increments logged, want %d", len(got), workers*increments)
	}
}

func testCancelledContext(t *testing.T, b storage.Backend) {
	mustPut(t, b, "k", "v")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	if _, err := b.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with cancelled context: %v, want context.Canceled", err)
	}
	if _, err := b.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List with cancelled context: %v, want context.Canceled", err)
	}
	if err := b.Apply(ctx, storage.Put("k", []byte("w")), storage.Put("new", nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with cancelled context: %v, want context.Canceled", err)
	}
	wantValue(t, b, "k", []byte("v"))
	wantValue(t, b, "new", absent)
}

func testEmptyKey(t *testing.T, b storage.Backend) {
	ctx := context.Background()
	_, err := b.Get(ctx, "")
	wantRejected(t, `Get("")`, err)

	tests := []struct {
		name string
		op   storage.Op
	}{
		{"put", storage.Put("", []byte("v"))},
		{"conditional put", storage.Op{Kind: storage.OpPut, Key: "", IfRevision: 0}},
		{"delete", storage.Delete("")},
		{"check", storage.Op{Kind: storage.OpCheck, Key: "", IfRevision: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The valid op must not be written either.
			err := b.Apply(ctx, storage.Put("valid", []byte("v")), tc.op)
			wantRejected(t, fmt.Sprintf("Apply(%s)", describe([]storage.Op{tc.op})), err)
			wantValue(t, b, "valid", absent)
		})
	}
	if got := mustList(t, b, ""); len(got) != 0 {
		t.Errorf("rejected batches wrote %q", got)
	}
}

func testInvalidOpKind(t *testing.T, b storage.Backend) {
	for _, kind := range []storage.OpKind{0, storage.OpCheck + 1, -1} {
		op := storage.Op{Kind: kind, Key: "k", Value: []byte("v"), IfRevision: storage.AnyRevision}
		err := b.Apply(context.Background(), storage.Put("valid", []byte("v")), op)
		wantRejected(t, fmt.Sprintf("Apply(%s)", describe([]storage.Op{op})), err)
	}
	wantValue(t, b, "valid", absent)
	wantValue(t, b, "k", absent)
}

func testUseAfterClose(t *testing.T, b storage.Backend) {
	mustPut(t, b, "k", "v")
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	if _, err := b.Get(ctx, "k"); err == nil {
		t.Error("Get after Close: got nil error")
	}
	if _, err := b.List(ctx, ""); err == nil {
		t.Error("List after Close: got nil error")
	}
	if err := b.Apply(ctx, storage.Put("k", []byte("w"))); err == nil {
		t.Error("Apply after Close: got nil error")
	}
}
