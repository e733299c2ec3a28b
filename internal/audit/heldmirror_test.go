package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingMirror keeps every line it is sent.
type recordingMirror struct {
	mu    sync.Mutex
	lines [][]byte
}

func (m *recordingMirror) Send(line []byte) {
	m.mu.Lock()
	m.lines = append(m.lines, bytes.Clone(line))
	m.mu.Unlock()
}

func (m *recordingMirror) has(s string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lines {
		if bytes.Contains(l, []byte(s)) {
			return true
		}
	}
	return false
}

func (m *recordingMirror) snapshot() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lines)
}

// A mirror is sent a relaxed line only once it is fsynced, and never a
// line a failed fsync cut: every line a mirror saw is in the verified log,
// so a mirror cannot hold two different lines (or checkpoints) under one
// seq.
func TestBatchedSyncMirrorsOnlyDurableLines(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	var failing atomic.Bool
	fl := &faults{failSync: failing.Load}
	m := &recordingMirror{}
	tr, err := Open(Options{Dir: dir, Keys: k, OpenFile: fl.open, BatchedSync: time.Second, CheckpointEvery: 3,
		CheckpointInterval: time.Hour, Mirrors: []Mirror{m}})
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
	if m.has(`"lost`) {
		t.Fatal("a mirror was sent a relaxed line before its fsync")
	}
	failing.Store(true)
	if err := durable("b"); err == nil {
		t.Fatal("want the fsync failure")
	}
	failing.Store(false)
	if err := durable("c"); err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(context.Background(), relaxedRec("e")); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if m.has(`"lost`) || m.has(`"request_id":"b"`) {
		t.Fatal("a mirror was sent lines the failed fsync cut")
	}
	if !m.has(`"request_id":"e"`) {
		t.Fatal("the relaxed line fsynced at Close never reached the mirror")
	}
	file := readAll(t, dir)
	seqs := map[string]bool{}
	for _, l := range m.snapshot() {
		if !bytes.Contains(file, l) {
			t.Fatalf("the mirror holds a line that is not in the log: %s", l)
		}
		var r Record
		mustUnmarshal(t, l, &r)
		key := fmt.Sprint(r.Seq)
		if seqs[key] {
			t.Fatalf("the mirror holds two lines with seq %d", r.Seq)
		}
		seqs[key] = true
	}
	if ids := logRequestIDs(t, dir, k); !slices.Equal(ids, []string{"a", "c", "e"}) {
		t.Fatalf("log holds %v, want [a c e]", ids)
	}
}

// The window's own fsync (no later record) sends the held lines.
func TestBatchedSyncMirrorsAfterTimerFsync(t *testing.T) {
	m := &recordingMirror{}
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), BatchedSync: 20 * time.Millisecond, Mirrors: []Mirror{m}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Record(context.Background(), relaxedRec("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !m.has(`"request_id":"x"`) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !m.has(`"request_id":"x"`) {
		t.Fatal("a relaxed line was not mirrored after the window's fsync")
	}
}

// The stdout mirror next to a file sink is held back the same way.
func TestBatchedSyncStdoutMirrorHeld(t *testing.T) {
	var out lockedBuffer
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), BatchedSync: time.Second, Stdout: &out, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(context.Background(), relaxedRec("held")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the queue's writer would have run
	if strings.Contains(out.String(), `"held"`) {
		t.Fatal("the stdout mirror printed a relaxed line before its fsync")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"held"`) {
		t.Fatal("the stdout mirror never printed the line fsynced at Close")
	}
}

// What is held for the mirrors is bounded: past maxHeld bytes, a relaxed
// record waits for an fsync.
func TestBatchedSyncHeldBound(t *testing.T) {
	fl := &faults{}
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), OpenFile: fl.open, BatchedSync: MaxBatchedSync,
		CheckpointEvery: 1 << 20, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	base := fl.syncs.Load()
	written := 0
	for i := 0; written < maxHeld+4096; i++ {
		r := relaxedRec(fmt.Sprint("r", i))
		r.Resource = strings.Repeat("k", 1000)
		if err := tr.Record(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		written += 1000
	}
	if fl.syncs.Load() == base {
		t.Fatalf("%d bytes of relaxed lines held without an fsync; want one past %d", written, maxHeld)
	}
}

// lockedBuffer is a bytes.Buffer safe for the stdout queue's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}
