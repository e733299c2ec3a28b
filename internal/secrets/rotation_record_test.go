package secrets

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A scheduled rotation's outcome that cannot be recorded is part of
// RotateDue's error (the job logs it), though the rotation itself is done;
// the intent was recorded before any version was written.
func TestRotateDueOutcomeRecordFailureReported(t *testing.T) {
	e := newEnv(t)
	e.put(t, "db", map[string]string{"password": "old-secret-value"})
	e.rotation(t, "db", "random:")
	e.clk.add(31 * 24 * time.Hour)
	refused := errors.New("trail full")
	var mu sync.Mutex
	var seen []RotationEvent
	e.svc.SetRotationRecorder(func(_ context.Context, ev RotationEvent) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, ev)
		if !ev.Done {
			if md := e.meta(t, e.svc, "db"); md.LatestVersion != 1 || md.PendingVersion != 0 {
				t.Errorf("intent recorded after a version was written: latest %d pending %d", md.LatestVersion, md.PendingVersion)
			}
			return nil
		}
		return refused
	})
	n, err := e.svc.RotateDue(ctx)
	if n != 1 || !errors.Is(err, refused) {
		t.Fatalf("job: %d rotations, %v; want 1 and the outcome record's failure", n, err)
	}
	if len(seen) != 2 || seen[0].Done || !seen[1].Done || seen[1].Err != nil || seen[1].Result.CurrentVersion != 2 {
		t.Fatalf("recorded events %+v", seen)
	}
}
