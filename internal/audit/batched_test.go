package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func relaxedRec(id string) *Record {
	return &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: id, Outcome: "ok", Relaxed: true}
}

// A relaxed record is acknowledged without an fsync of its own, and is
// fsynced within the window; a record that is not relaxed still waits for
// one.
func TestBatchedSyncAcknowledgesRelaxedBeforeFsync(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	fl := &faults{}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	base := fl.syncs.Load() // the start record's
	for i := range 20 {
		if err := tr.Record(context.Background(), relaxedRec(fmt.Sprint("r", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := fl.syncs.Load() - base; n != 0 {
		t.Fatalf("relaxed records were fsynced %d times before they were acknowledged; want none", n)
	}
	// Written (the page cache) already, so a process crash loses nothing.
	if b := readAll(t, dir); !bytes.Contains(b, []byte(`"request_id":"r19"`)) {
		t.Fatal("an acknowledged relaxed record is not in the file")
	}
	deadline := time.Now().Add(5 * time.Second)
	for fl.syncs.Load() == base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fl.syncs.Load() == base {
		t.Fatal("relaxed records were never fsynced")
	}
	// Not relaxed: its own fsync before Record returns.
	before := fl.syncs.Load()
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "d"}); err != nil {
		t.Fatal(err)
	}
	if fl.syncs.Load() == before {
		t.Fatal("a durable record was acknowledged without an fsync")
	}
	// An intent is never relaxed, even if marked so.
	before = fl.syncs.Load()
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "key:Create", RequestID: "i", Phase: PhaseIntent, Relaxed: true}); err != nil {
		t.Fatal(err)
	}
	if fl.syncs.Load() == before {
		t.Fatal("an intent record was acknowledged without an fsync")
	}
}

// Without BatchedSync, Relaxed changes nothing: every record waits for
// its fsync.
func TestRelaxedIgnoredWithoutBatchedSync(t *testing.T) {
	fl := &faults{syncDelay: 50 * time.Millisecond}
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), OpenFile: fl.open})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := range 3 {
		before := fl.syncs.Load()
		start := time.Now()
		if err := tr.Record(context.Background(), relaxedRec(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		// Returned only after its (slow) fsync ended.
		if fl.syncs.Load() == before || time.Since(start) < fl.syncDelay {
			t.Fatal("a relaxed record was acknowledged before its fsync with BatchedSync off")
		}
	}
}

func TestBatchedSyncBounds(t *testing.T) {
	for _, d := range []time.Duration{-time.Millisecond, MaxBatchedSync + time.Millisecond} {
		if _, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), BatchedSync: d}); err == nil || !strings.Contains(err.Error(), "batched sync window") {
			t.Fatalf("BatchedSync %v: got %v, want a refusal", d, err)
		}
	}
}

// When the fsync that follows relaxed records fails, those records are cut
// off (the kernel may have dropped their pages) and the chain goes on from
// the last durable line: the log verifies and holds the durable records
// and those after the failure, not the lost ones.
func TestBatchedSyncFailureDropsUnsyncedAndChainHolds(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failing atomic.Bool
	fl := &faults{failSync: failing.Load}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: time.Second, CheckpointEvery: 1000})
	if err != nil {
		t.Fatal(err)
	}
	durable := func(id string) error {
		return tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: id})
	}
	if err := durable("a"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := tr.Record(context.Background(), relaxedRec(fmt.Sprint("lost", i))); err != nil {
			t.Fatal(err)
		}
	}
	failing.Store(true)
	// The durable record's fsync fails: it is refused, and the relaxed
	// records before it are gone with it.
	if err := durable("b"); err == nil || !strings.Contains(err.Error(), "lost") {
		t.Fatalf("want the fsync failure naming the lost records, got %v", err)
	}
	failing.Store(false)
	if err := durable("c"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if err := tr.Record(context.Background(), relaxedRec("e")); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	ids := logRequestIDs(t, dir, k)
	if !slices.Equal(ids, []string{"a", "c", "e"}) {
		t.Fatalf("log holds %v, want [a c e]", ids)
	}
}

// The timer's fsync failing has the same effect as a durable record's.
func TestBatchedSyncTimerFailure(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failing atomic.Bool
	var failures atomic.Int64
	fl := &faults{failSync: failing.Load}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: 20 * time.Millisecond,
		Observe: func(_ time.Duration, _ int, err error) {
			if err != nil {
				failures.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(context.Background(), relaxedRec("a")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // synced by the timer
	failing.Store(true)
	if err := tr.Record(context.Background(), relaxedRec("lost")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for failures.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if failures.Load() == 0 {
		t.Fatal("the timer's failed fsync was not observed")
	}
	failing.Store(false)
	if err := tr.Record(context.Background(), relaxedRec("b")); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("log holds %v, want [a b]", ids)
	}
}

// A crash can leave zeroed blocks where unsynced writes had gone, with
// later lines after them. Open cuts the file at the first line holding a
// NUL and continues the chain from the line before it.
func TestOpenCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	tr, err := Open(Options{Dir: dir, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: fmt.Sprint("r", i)}); err != nil {
			t.Fatal(err)
		}
	}
	tr.Close()
	files := mustFiles(t, dir)
	name := files[len(files)-1]
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	// Zero from inside the line of r3 to the next sector boundary (a
	// block never written), keep what follows (later lines, the final
	// checkpoint).
	i := bytes.Index(b, []byte(`"request_id":"r3"`))
	end := (i/tornBlock + 1) * tornBlock
	if end >= len(b) {
		t.Fatalf("the log (%d bytes) ends before the sector boundary %d", len(b), end)
	}
	for j := i; j < end; j++ {
		b[j] = 0
	}
	lineStart := bytes.LastIndexByte(b[:i], '\n') + 1
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err = Open(Options{Dir: dir, Keys: k})
	if err != nil {
		t.Fatalf("open after a torn tail: %v", err)
	}
	file, cut := tr.TornTail()
	if file != name || cut != int64(len(b)-lineStart) {
		t.Fatalf("TornTail = %s, %d; want %s, %d", file, cut, name, len(b)-lineStart)
	}
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "after"}); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, []string{"r0", "r1", "r2", "after"}) {
		t.Fatalf("log holds %v", ids)
	}
}

func readAll(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	for _, n := range mustFiles(t, dir) {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// Close fsyncs relaxed lines even when the batch that wrote them ended
// with a checkpoint (nothing left to sign at Close).
func TestBatchedSyncCloseSyncsAfterRelaxedCheckpoint(t *testing.T) {
	fl := &faults{}
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), OpenFile: fl.open, BatchedSync: time.Second,
		CheckpointEvery: 3, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // the third record's batch ends with a checkpoint
		if err := tr.Record(context.Background(), relaxedRec(fmt.Sprint("r", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := fl.syncs.Load()
	tr.Close()
	if fl.syncs.Load() == before {
		t.Fatal("Close left relaxed lines without an fsync")
	}
}

// The outcome of an admitted intent is never acknowledged before its
// fsync, even if the caller marks it Relaxed: the change happened.
func TestBatchedSyncOwedOutcomeIsDurable(t *testing.T) {
	fl := &faults{}
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), OpenFile: fl.open, BatchedSync: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "key:Create", RequestID: "c", Phase: PhaseIntent}); err != nil {
		t.Fatal(err)
	}
	before := fl.syncs.Load()
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "key:Create", RequestID: "c", Outcome: "ok", Relaxed: true}); err != nil {
		t.Fatal(err)
	}
	if fl.syncs.Load() == before {
		t.Fatal("the outcome of an admitted intent was acknowledged before its fsync")
	}
}

// When the window's fsync finds no open file (reopening it failed), the
// relaxed lines still get their fsync within a window once it is back.
func TestBatchedSyncTimerRearmedAfterSkippedSync(t *testing.T) {
	var failWrite, failOpen atomic.Bool
	fl := &faults{failWrite: failWrite.Load}
	open := func(name string, flag int, perm os.FileMode) (File, error) {
		if failOpen.Load() {
			return nil, fmt.Errorf("open %s: input/output error", name)
		}
		return fl.open(name, flag, perm)
	}
	const window = 300 * time.Millisecond
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), OpenFile: open, BatchedSync: window, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Record(context.Background(), relaxedRec("a")); err != nil {
		t.Fatal(err)
	}
	failWrite.Store(true) // a durable record's write fails: the sink is broken
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "x"}); err == nil {
		t.Fatal("a failed write was acknowledged")
	}
	failWrite.Store(false)
	failOpen.Store(true) // and reopening it fails: no file when the window ends
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "y"}); err == nil {
		t.Fatal("a record was acknowledged with no sink")
	}
	time.Sleep(window + 200*time.Millisecond)
	failOpen.Store(false)
	if err := tr.Record(context.Background(), relaxedRec("b")); err != nil {
		t.Fatal(err)
	}
	before := fl.syncs.Load()
	deadline := time.Now().Add(window + 2*time.Second)
	for fl.syncs.Load() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fl.syncs.Load() == before {
		t.Fatal("relaxed lines were not fsynced within the window after the sink came back")
	}
}

// A NUL that is not the start of zeroed blocks (one damaged byte in a
// durable record) is no torn tail: Open does not cut the records after
// it away.
func TestOpenDoesNotCutAtAStrayNUL(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	writeLog(t, dir, k, 20, Options{CheckpointEvery: 5})
	files := mustFiles(t, dir)
	name := files[len(files)-1]
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(`"request_id":"r3"`))
	b[i+len(`"request_id":"r`)] = 0 // inside a signed-over record
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if tr, err := Open(Options{Dir: dir, Keys: k}); err == nil {
		_, cut := tr.TornTail()
		tr.Close()
		if cut > 0 {
			t.Fatalf("Open cut %d bytes of durable records at one stray NUL", cut)
		}
	}
	after, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) < len(b) {
		t.Fatalf("the file shrank from %d to %d bytes", len(b), len(after))
	}
}

// A signed checkpoint written inside a relaxed batch is lost with it when
// the next fsync fails: the chain goes back to before it, the log
// verifies and later checkpoints sign the records that stayed.
func TestBatchedSyncLostCheckpointRollsBack(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failing atomic.Bool
	fl := &faults{failSync: failing.Load}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: time.Second, CheckpointEvery: 3, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	durable := func(id string) error {
		return tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: id})
	}
	if err := durable("a"); err != nil {
		t.Fatal(err)
	}
	for i := range 4 { // a checkpoint after the second
		if err := tr.Record(context.Background(), relaxedRec(fmt.Sprint("lost", i))); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Contains(readAll(t, dir), []byte(`"type":"checkpoint"`)) {
		t.Fatal("no checkpoint inside the relaxed records")
	}
	failing.Store(true)
	if err := durable("b"); err == nil {
		t.Fatal("a failed fsync was acknowledged")
	}
	failing.Store(false)
	for _, id := range []string{"c", "d", "e", "f"} {
		if err := durable(id); err != nil {
			t.Fatal(err)
		}
	}
	tr.Close()
	if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, []string{"a", "c", "d", "e", "f"}) {
		t.Fatalf("log holds %v", ids)
	}
}

// Rotation with relaxed lines in the old file: the rotation's checkpoint
// fsync covers them (the relaxed batch that rotated is in the new file);
// when a later fsync fails only the lines after the last good one are cut.
func TestBatchedSyncRotationWhileDirty(t *testing.T) {
	for _, fail := range []bool{false, true} {
		dir := t.TempDir()
		k := testKeys(t)
		var failing atomic.Bool
		fl := &faults{failSync: failing.Load}
		tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: time.Second, MaxFileSize: 2 << 10, CheckpointInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		durable := 0 // want[:durable] were fsynced
		for i := 0; len(mustFiles(t, dir)) < 3; i++ {
			id := fmt.Sprint("r", i)
			before := fl.syncs.Load()
			if err := tr.Record(context.Background(), relaxedRec(id)); err != nil {
				t.Fatal(err)
			}
			if fl.syncs.Load() != before {
				durable = len(want) // a rotation: everything before id
			}
			want = append(want, id)
		}
		if durable == 0 {
			t.Fatal("no rotation fsynced the relaxed lines")
		}
		for i := range 3 {
			if err := tr.Record(context.Background(), relaxedRec(fmt.Sprint("s", i))); err != nil {
				t.Fatal(err)
			}
			want = append(want, fmt.Sprint("s", i))
		}
		if fail {
			failing.Store(true)
			if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "x"}); err == nil {
				t.Fatal("a failed fsync was acknowledged")
			}
			failing.Store(false)
			want = want[:durable]
		}
		if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "end"}); err != nil {
			t.Fatal(err)
		}
		want = append(want, "end")
		tr.Close()
		if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, want) {
			t.Fatalf("fail=%v: log holds %v, want %v", fail, ids, want)
		}
	}
}

// A relaxed record whose write fails is refused; the relaxed lines before
// it stay and are fsynced with the next batch.
func TestBatchedSyncRelaxedWriteFailure(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failWrite atomic.Bool
	fl := &faults{failWrite: failWrite.Load}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(context.Background(), relaxedRec("a")); err != nil {
		t.Fatal(err)
	}
	failWrite.Store(true)
	if err := tr.Record(context.Background(), relaxedRec("x")); err == nil {
		t.Fatal("a failed write was acknowledged")
	}
	failWrite.Store(false)
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "b"}); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("log holds %v", ids)
	}
}

// Relaxed and durable records from many writers, with fsyncs failing now
// and then: every acknowledged durable record is in the log, which
// verifies (run with -race).
func TestBatchedSyncConcurrentNoDurableLoss(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var n atomic.Int64
	var healed atomic.Bool // the final checkpoint's fsync works
	fl := &faults{failSync: func() bool { return !healed.Load() && n.Add(1)%7 == 0 }}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: 2 * time.Millisecond, CheckpointEvery: 10, MaxFileSize: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 60 {
				id := fmt.Sprintf("w%d-%d", w, i)
				r := relaxedRec(id)
				r.Relaxed = i%3 != 0
				if err := tr.Record(context.Background(), r); err == nil && !r.Relaxed {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	healed.Store(true)
	tr.Close()
	if n.Load() < 7 {
		t.Fatalf("only %d fsyncs: no failure was exercised", n.Load())
	}
	ids := logRequestIDs(t, dir, k)
	for _, id := range acked {
		if !slices.Contains(ids, id) {
			t.Fatalf("acknowledged durable record %s is not in the log", id)
		}
	}
}

// cutTornTail at the edges: no NUL, an empty file, zeros up to the end of
// the file (not a sector boundary), and zeros in the first line.
func TestCutTornTailEdges(t *testing.T) {
	dir := t.TempDir()
	write := func(i int, b []byte) string {
		name := fmt.Sprintf("%s/f%d", dir, i)
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	lines := []byte("{\"seq\":1}\n{\"seq\":2}\n")
	cases := []struct {
		b       []byte
		cut     int64
		wantErr bool
	}{
		{nil, 0, false},
		{lines, 0, false},
		{append(slices.Clone(lines), 0, 0, 0), 3, false},                 // zeros to the end
		{append(append(slices.Clone(lines), `{"se`...), 0, 0), 6, false}, // inside a last line
		{append(make([]byte, tornBlock), lines...), int64(tornBlock + len(lines)), false},
		{append(append(slices.Clone(lines[:10]), 0), lines[10:]...), 0, true}, // a stray NUL
	}
	for i, c := range cases {
		name := write(i, c.b)
		cut, err := cutTornTail(name)
		if (err != nil) != c.wantErr || cut != c.cut {
			t.Errorf("case %d: cut %d, %v; want %d, error %v", i, cut, err, c.cut, c.wantErr)
		}
		if st, _ := os.Stat(name); st.Size() != int64(len(c.b))-c.cut {
			t.Errorf("case %d: size %d, want %d", i, st.Size(), int64(len(c.b))-c.cut)
		}
	}
}

// A replica's trail (format 3) cuts its own torn tail and leaves the
// files of another replica in the same directory alone.
func TestOpenCutsTornTailOfItsReplicaOnly(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	for _, r := range []string{"a", "b"} {
		writeLog(t, dir, k, 6, Options{ReplicaID: r})
	}
	tear := func(r string) (string, []byte) {
		files, err := ReplicaFiles(dir, r)
		if err != nil {
			t.Fatal(err)
		}
		name := files[len(files)-1]
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte(`"request_id":"r3"`))
		end := min((i/tornBlock+1)*tornBlock, len(b))
		for j := i; j < end; j++ {
			b[j] = 0
		}
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return name, b
	}
	nameA, _ := tear("a")
	nameB, b := tear("b")
	tr, err := Open(Options{Dir: dir, Keys: k, ReplicaID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if file, cut := tr.TornTail(); file != nameA || cut == 0 {
		t.Fatalf("TornTail = %s, %d; want a cut of %s", file, cut, nameA)
	}
	tr.Close()
	if after, _ := os.ReadFile(nameB); !bytes.Equal(after, b) {
		t.Fatal("replica a's trail changed replica b's file")
	}
	files, err := ReplicaFiles(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey(), Replica: "a"}); err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %v", err, res.Problem)
	}
}

// Relaxed lines written before a failed write are fsynced in their file
// before the trail reopens it: the state it then calls durable is.
func TestBatchedSyncDirtyLinesSyncedBeforeReopen(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failWrite, failOpen atomic.Bool
	fl := &faults{failWrite: failWrite.Load}
	open := func(name string, flag int, perm os.FileMode) (File, error) {
		if failOpen.Load() {
			return nil, fmt.Errorf("open %s: input/output error", name)
		}
		return fl.open(name, flag, perm)
	}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: open, BatchedSync: time.Second, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(context.Background(), relaxedRec("a")); err != nil {
		t.Fatal(err)
	}
	failWrite.Store(true)
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "x"}); err == nil {
		t.Fatal("a failed write was acknowledged")
	}
	failWrite.Store(false)
	failOpen.Store(true)
	before := fl.syncs.Load()
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "y"}); err == nil {
		t.Fatal("a record was acknowledged with no sink")
	}
	if fl.syncs.Load() == before {
		t.Fatal("the file was closed to be reopened with relaxed lines not fsynced")
	}
	failOpen.Store(false)
	if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: "b"}); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("log holds %v", ids)
	}
}
