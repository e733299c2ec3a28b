package replica

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestSingleIsTheOnlyMemberAndLeader(t *testing.T) {
	var sealed atomic.Bool
	s := NewSingle(Config{ID: "solo", Address: "http://127.0.0.1:8200", Version: "v", Sealed: sealed.Load})
	sealed.Store(true)
	ms, err := s.Members(context.Background())
	if err != nil || len(ms) != 1 {
		t.Fatalf("%v %v", ms, err)
	}
	if m := ms[0]; m.ID != "solo" || !m.Leader || !m.Sealed || m.Address != "http://127.0.0.1:8200" || m.Started.IsZero() {
		t.Fatalf("%+v", m)
	}
	if !s.IsLeader() || s.Check(context.Background()) != nil {
		t.Fatal("a single node always leads")
	}
}

// deposed leads (Lead returns) but fails Check: a replica back from a
// pause whose session has not noticed the lost lease yet.
type deposed struct {
	Single
	checks atomic.Int64
}

func (d *deposed) Check(context.Context) error {
	d.checks.Add(1)
	return ErrNotLeader
}

// TestRunJobChecksBeforeEachRun: RunJob confirms the leadership before
// every run; a replica whose check fails runs nothing.
func TestRunJobChecksBeforeEachRun(t *testing.T) {
	d := &deposed{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runs atomic.Int64
	var errs atomic.Int64
	go func() {
		defer close(done)
		RunJob(ctx, d, 5*time.Millisecond, func(context.Context) error { runs.Add(1); return nil }, func(err error) {
			if errors.Is(err, ErrNotLeader) {
				errs.Add(1)
			}
		})
	}()
	for d.checks.Load() < 5 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := runs.Load(); n != 0 {
		t.Fatalf("the job ran %d times without the leadership", n)
	}
	if errs.Load() == 0 {
		t.Fatal("the failed checks were not reported")
	}
}

// TestRunJobStopsWithContext: RunJob on a single node runs the job and
// returns when ctx ends.
func TestRunJobStopsWithContext(t *testing.T) {
	s := NewSingle(Config{ID: "solo"})
	ctx, cancel := context.WithCancel(context.Background())
	var runs atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunJob(ctx, s, time.Millisecond, func(context.Context) error { runs.Add(1); return nil }, nil)
	}()
	for runs.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunJob did not return")
	}
}
