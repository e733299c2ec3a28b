package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faults decides, per call, whether a write or an fsync of the log fails.
type faults struct {
	failWrite    func() bool
	failSync     func() bool
	failTruncate func() bool
	syncs        atomic.Int64
	syncDelay    time.Duration
}

// faultFile fails writes (after writing half the data, like a disk that
// fills up mid-write) and fsyncs as its faults say.
type faultFile struct {
	*os.File
	fl *faults
}

func (f faultFile) Write(b []byte) (int, error) {
	if f.fl.failWrite != nil && f.fl.failWrite() {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, errors.New("no space left on device")
	}
	return f.File.Write(b)
}

func (f faultFile) Sync() error {
	f.fl.syncs.Add(1)
	if f.fl.syncDelay > 0 {
		time.Sleep(f.fl.syncDelay)
	}
	if f.fl.failSync != nil && f.fl.failSync() {
		return errors.New("input/output error")
	}
	return f.File.Sync()
}

func (f faultFile) Truncate(size int64) error {
	if f.fl.failTruncate != nil && f.fl.failTruncate() {
		return errors.New("input/output error (truncate)")
	}
	return f.File.Truncate(size)
}

func (fl *faults) open(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return faultFile{f, fl}, nil
}

// logRequestIDs reads the request ids of every record in dir's log, in
// order, after checking that the log verifies.
func logRequestIDs(t *testing.T, dir string, k *Keys) []string {
	t.Helper()
	files := mustFiles(t, dir)
	res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %v", err, res.Problem)
	}
	var ids []string
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for l := range bytes.Lines(b) {
			var r Record
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			if r.Type == TypeRequest {
				ids = append(ids, r.RequestID)
			}
		}
	}
	return ids
}

func TestSyncFailureFailsTheBatchAndRecovers(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failing atomic.Bool
	fl := &faults{failSync: failing.Load}
	var failures atomic.Int64
	tr, err := Open(Options{Dir: dir, Keys: k, CheckpointEvery: 7, OpenFile: fl.open,
		Observe: func(_ time.Duration, _ int, err error) {
			if err != nil {
				failures.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	rec := func(id string) error {
		return tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: id, Outcome: "ok"})
	}
	for i := range 10 {
		if err := rec(fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	failing.Store(true)
	for i := range 3 {
		r := &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: fmt.Sprint("b", i)}
		err := tr.Record(context.Background(), r)
		if err == nil || !strings.Contains(err.Error(), "input/output error") {
			t.Fatalf("want an fsync failure, got %v", err)
		}
		if r.Seq != 0 || r.Prev != "" {
			t.Fatalf("a failed record keeps seq %d", r.Seq)
		}
	}
	failing.Store(false)
	for i := range 10 {
		if err := rec(fmt.Sprint("c", i)); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	tr.Close()
	if failures.Load() != 3 {
		t.Fatalf("observed %d failures, want 3", failures.Load())
	}
	ids := logRequestIDs(t, dir, k)
	if len(ids) != 20 || slices.Contains(ids, "b0") || ids[10] != "c0" {
		t.Fatalf("log holds %v", ids)
	}
}

// TestConcurrentFaults runs many writers against a log whose writes and
// fsyncs fail at random, with slow fsyncs so that batches are large: every
// record acknowledged is in the log exactly once and in order of its
// acknowledgement within a writer, no refused record is in it, and the log
// verifies across rotations and checkpoints.
func TestConcurrentFaults(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	var healed atomic.Bool
	chance := func(p float64) func() bool {
		return func() bool {
			if healed.Load() {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			return rng.Float64() < p
		}
	}
	fl := &faults{failWrite: chance(0.03), failSync: chance(0.05), syncDelay: 200 * time.Microsecond}
	tr, err := Open(Options{Dir: dir, Keys: k, CheckpointEvery: 13, MaxFileSize: 32 << 10, OpenFile: fl.open})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 150
	acked := make([][]string, writers)
	refused := map[string]bool{}
	var refusedMu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				r := &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: id, Token: "cft_secret", Outcome: "ok"}
				if i%5 == 0 {
					r.Phase = PhaseIntent
				}
				if err := tr.Record(context.Background(), r); err != nil {
					refusedMu.Lock()
					refused[id] = true
					refusedMu.Unlock()
					continue
				}
				if r.Seq == 0 {
					t.Errorf("%s acknowledged without a sequence number", id)
				}
				acked[w] = append(acked[w], id)
			}
		})
	}
	wg.Wait()
	healed.Store(true) // so that the final checkpoint is written
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if len(refused) == 0 || fl.syncs.Load() == 0 {
		t.Fatal("no fault was injected")
	}
	ids := logRequestIDs(t, dir, k)
	pos := map[string]int{}
	for i, id := range ids {
		if _, dup := pos[id]; dup {
			t.Fatalf("%s is in the log twice", id)
		}
		if refused[id] {
			t.Fatalf("%s was refused but is in the log", id)
		}
		pos[id] = i
	}
	n := 0
	for w := range writers {
		last := -1
		for _, id := range acked[w] {
			p, ok := pos[id]
			if !ok {
				t.Fatalf("%s was acknowledged but is not in the log", id)
			}
			if p < last {
				t.Fatalf("%s is before an earlier record of its writer", id)
			}
			last = p
			n++
		}
	}
	if n != len(ids) {
		t.Fatalf("log holds %d records, %d were acknowledged", len(ids), n)
	}
	t.Logf("%d acknowledged, %d refused, %d fsyncs", n, len(refused), fl.syncs.Load())
}

func TestStdoutPrimarySink(t *testing.T) {
	var out bytes.Buffer
	k := testKeys(t)
	tr, err := Open(Options{Keys: k, Stdout: &out, CheckpointEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	tr.Close()
	p := t.TempDir() + "/out.jsonl"
	os.WriteFile(p, out.Bytes(), 0o600)
	res, err := Verify([]string{p}, VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil || res.Records != 5 || res.Checkpoints != 2 {
		t.Fatalf("%v %+v", err, res)
	}
}

// TestRefusedLinesCutWhenTruncateFailed: when an fsync fails and cutting
// the file back fails too, the refused lines stay on disk for a moment;
// recovery cuts the file back to what was acknowledged instead of
// continuing the chain from them.
func TestRefusedLinesCutWhenTruncateFailed(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failing atomic.Bool
	fl := &faults{failSync: failing.Load, failTruncate: failing.Load}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open})
	if err != nil {
		t.Fatal(err)
	}
	rec := func(id string) error {
		return tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: id, Outcome: "ok"})
	}
	for i := range 5 {
		if err := rec(fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	failing.Store(true)
	if err := rec("refused"); err == nil {
		t.Fatal("a failed fsync was acknowledged")
	}
	failing.Store(false)
	for i := range 5 {
		if err := rec(fmt.Sprint("c", i)); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	tr.Close()
	ids := logRequestIDs(t, dir, k)
	if len(ids) != 10 || slices.Contains(ids, "refused") {
		t.Fatalf("log holds %v: a refused record was kept", ids)
	}
}
