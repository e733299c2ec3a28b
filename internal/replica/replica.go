// Package replica is a Coffer server's place among the replicas that share
// one store: its membership record, which every replica publishes so that
// `coffer operator members` can list them, and the job leadership that
// makes background jobs (automatic rotation and deletion, token expiry
// sweeps, key-state alert rules) run on one replica at a time.
//
// On etcd (NewEtcd) each replica keeps its record under a lease of its own
// session and campaigns in a go.etcd.io/etcd/client/v3/concurrency election;
// a replica that stops renewing its lease (crashed, partitioned, paused past
// the TTL) loses both within the lease TTL. On a single bbolt file
// (NewSingle) the one process is the only member and always the leader.
//
// Leadership is a hint, not a lock: a deposed leader can be paused between
// checking it and writing. Jobs therefore also write each item with
// compare-and-swap on its stored revision (keys.Service.Tick does), so a
// late write of a deposed leader fails instead of doing the work twice.
package replica

import (
	"context"
	"errors"
	"time"
)

// Member is one replica as the others see it. It holds no secret: members
// records are stored outside the barrier so that a sealed replica can
// publish its own.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Version string `json:"version"`
	Sealed  bool   `json:"sealed"`
	// Started is when this process started.
	Started time.Time `json:"started"`
	// Heartbeat is when the replica last wrote its record.
	Heartbeat time.Time `json:"last_heartbeat"`
	// Leader is set when the replica holds the job leadership.
	Leader bool `json:"leader"`
}

// Config describes this replica.
type Config struct {
	ID      string
	Address string
	Version string
	// Sealed reports the seal state published in the record (nil: never
	// sealed).
	Sealed func() bool
	// TTL is the lease of the record and of the leadership (default 10s;
	// etcd rounds it up to whole seconds).
	TTL time.Duration
	// OnError, when set, is told about storage errors of the background
	// loop (they are retried).
	OnError func(error)
}

// DefaultTTL is the lease TTL when Config.TTL is zero.
const DefaultTTL = 10 * time.Second

// ErrNotLeader says this replica does not (or no longer) hold the job
// leadership.
var ErrNotLeader = errors.New("this replica does not hold the job leadership")

// Replica is this process's membership and job leadership.
type Replica interface {
	// ID is this replica's id.
	ID() string
	// Members lists the live replicas, the leader marked, by id.
	Members(ctx context.Context) ([]Member, error)
	// IsLeader reports whether this replica holds the job leadership as
	// far as it knows without asking the store.
	IsLeader() bool
	// Lead waits until this replica holds the job leadership and returns
	// a context that ends when it loses it (or when ctx ends).
	Lead(ctx context.Context) (context.Context, error)
	// Check confirms with the store, now, that this replica still holds
	// the leadership it was given. It returns an error wrapping
	// ErrNotLeader when it does not, and ends the leadership context.
	Check(ctx context.Context) error
	// Close gives up the leadership and removes the record.
	Close() error
}

// RunJob runs job every interval while this replica holds the job
// leadership, until ctx ends. Each run gets the leadership context (it
// ends when the leadership is lost) and runs only after Check confirmed the
// leadership with the store: a replica that wakes from a pause longer than
// its lease finds its leadership gone before it runs another job, even if
// its session has not noticed yet. Errors of the job and of the check go to
// onErr.
func RunJob(ctx context.Context, r Replica, interval time.Duration, job func(context.Context) error, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for ctx.Err() == nil {
		lctx, err := r.Lead(ctx)
		if err != nil {
			continue // ctx ended
		}
		for lctx.Err() == nil {
			select {
			case <-lctx.Done():
			case <-t.C:
				if err := r.Check(lctx); err != nil {
					if onErr != nil && ctx.Err() == nil {
						onErr(err)
					}
					continue
				}
				if err := job(lctx); err != nil && onErr != nil && ctx.Err() == nil {
					onErr(err)
				}
			}
		}
	}
}

// Single is the replica of a single-node store: the only member and always
// the leader.
type Single struct {
	cfg     Config
	started time.Time
}

// NewSingle returns the replica of a single-node (bbolt) server.
func NewSingle(cfg Config) *Single {
	return &Single{cfg: cfg, started: time.Now().UTC()}
}

// ID implements Replica.
func (s *Single) ID() string { return s.cfg.ID }

// Members implements Replica: this process alone, the leader.
func (s *Single) Members(context.Context) ([]Member, error) {
	m := Member{ID: s.cfg.ID, Address: s.cfg.Address, Version: s.cfg.Version, Started: s.started,
		Heartbeat: time.Now().UTC(), Leader: true}
	if s.cfg.Sealed != nil {
		m.Sealed = s.cfg.Sealed()
	}
	return []Member{m}, nil
}

// IsLeader implements Replica: always.
func (s *Single) IsLeader() bool { return true }

// Lead implements Replica: the leadership lasts as long as ctx.
func (s *Single) Lead(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ctx, nil
}

// Check implements Replica.
func (s *Single) Check(ctx context.Context) error { return ctx.Err() }

// Close implements Replica.
func (s *Single) Close() error { return nil }
