package monitor

import (
	"context"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"path/filepath"
)

// TestTimedKeepsWatcher: the metrics wrapper passes storage.Watcher through
// when the backend has it, times the backend's requests either way, and
// does not invent a Watcher for a backend without one.
func TestTimedKeepsWatcher(t *testing.T) {
	m := NewMetrics(0, func() State { return State{} })
	mem := inmem.New()
	b := Timed(mem, m)
	w, ok := b.(storage.Watcher)
	if !ok {
		t.Fatal("Timed(inmem) hides storage.Watcher")
	}
	ctx := context.Background()
	if err := b.Apply(ctx, storage.Put("k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	if rev, err := w.Revision(ctx); err != nil || rev != 1 {
		t.Errorf("Revision through the wrapper = %d, %v; want 1", rev, err)
	}
	if got := testutilCount(t, m, "apply"); got != 1 {
		t.Errorf("apply observations = %d, want 1", got)
	}

	file, err := bolt.Open(filepath.Join(t.TempDir(), "coffer.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, ok := Timed(file, m).(storage.Watcher); ok {
		t.Error("Timed(bolt) claims to be a storage.Watcher")
	}
}

// testutilCount returns how many storage latencies of op were observed.
func testutilCount(t *testing.T, m *Metrics, op string) uint64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetValue() == op && metric.GetHistogram() != nil {
					return metric.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
