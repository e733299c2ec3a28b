package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Paths beside the store's data. The etcd backend keeps the barrier's
// entries under "<prefix>/"; member records and election keys live under
// "<prefix>.replicas/", outside that range, so that listing, watching,
// rewrapping, snapshotting or restoring the store never meets them (a
// restored member record would have no lease and never expire). An etcd
// role granted the key prefix "<prefix>" covers both. They are plain JSON
// and replica ids, not barrier-encrypted: a sealed replica has no barrier
// key and must still publish its record. They hold no secret.
const (
	membersDir  = ".replicas/members/"
	electionDir = ".replicas/leader"
)

// Etcd is the replica of a server on etcd. Its background loop keeps one
// session (a lease of TTL) at a time: it publishes the member record under
// that lease, re-publishes it every TTL/3 and when the seal state changes,
// and campaigns for the job leadership. When the session ends (its lease
// expired or was revoked, or a Check found the leadership gone) the
// leadership context ends and the loop starts a new session and campaigns
// again.
type Etcd struct {
	cli     *clientv3.Client
	prefix  string
	cfg     Config
	ttl     int // seconds
	started time.Time

	mu      sync.Mutex
	lead    *leadership   // nil when not leader
	changed chan struct{} // closed and replaced when lead changes
	lease   clientv3.LeaseID

	stop context.CancelFunc
	done chan struct{}
}

// leadership is one term of job leadership.
type leadership struct {
	ctx    context.Context
	cancel context.CancelFunc
	key    string // this replica's election key
	rev    int64  // its create revision
}

// NewEtcd starts the replica's background loop over cli; prefix is the
// store's key prefix (like "/coffer"). The first record and campaign
// happen in the background: NewEtcd does not wait for etcd. Close stops
// the loop and revokes the lease, so the others see the record vanish and
// one of them takes over the leadership at once.
func NewEtcd(cli *clientv3.Client, prefix string, cfg Config) (*Etcd, error) {
	if cfg.ID == "" {
		return nil, errors.New("replica: an id is required (ha.replica_id)")
	}
	if strings.ContainsAny(cfg.ID, "/\x00") {
		return nil, fmt.Errorf("replica: id %q must not contain '/'", cfg.ID)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("replica: lease TTL %s is below etcd's granularity of 1s", cfg.TTL)
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &Etcd{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), cfg: cfg, ttl: int((cfg.TTL + time.Second - 1) / time.Second),
		started: time.Now().UTC(), changed: make(chan struct{}), stop: stop, done: make(chan struct{})}
	go e.run(ctx)
	return e, nil
}

// ID implements Replica.
func (e *Etcd) ID() string { return e.cfg.ID }

func (e *Etcd) memberKey(id string) string { return e.prefix + membersDir + id }

// run keeps a session at a time until ctx ends.
func (e *Etcd) run(ctx context.Context) {
	defer close(e.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		err := e.term(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil && e.cfg.OnError != nil {
			e.cfg.OnError(err)
		}
		if time.Since(began) > e.cfg.TTL {
			backoff = 100 * time.Millisecond
		}
		// Jitter, so that replicas cut off together do not come back in
		// lockstep; at most TTL/3 so a healthy store is rejoined quickly.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, e.cfg.TTL/3)
	}
}

var errSessionEnded = errors.New("replica: the etcd session ended (lease expired or revoked)")

// term is one session's life: publish, campaign, heartbeat.
func (e *Etcd) term(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, e.cfg.TTL)
	lease, err := e.cli.Grant(gctx, int64(e.ttl))
	cancel()
	if err != nil {
		return fmt.Errorf("replica: granting a lease: %w", err)
	}
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(e.ttl), concurrency.WithContext(ctx))
	if err != nil {
		e.revoke(lease.ID)
		return fmt.Errorf("replica: keeping a lease alive: %w", err)
	}
	e.mu.Lock()
	e.lease = sess.Lease()
	e.mu.Unlock()
	defer func() {
		e.setLeader(nil)
		sess.Orphan()
		// Revoke with a context of its own: ctx may be done (Close),
		// and a revoked lease hands the leadership over at once instead
		// of after the TTL.
		e.revoke(sess.Lease())
	}()

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stopWatch := context.AfterFunc(ctx, scancel)
	defer stopWatch()
	go func() {
		select {
		case <-sess.Done():
			scancel()
		case <-sctx.Done():
		}
	}()

	sealed := e.sealed()
	if err := e.publish(sctx, sess.Lease(), sealed); err != nil {
		return err
	}
	el := concurrency.NewElection(sess, e.prefix+electionDir)
	campaign := make(chan error, 1)
	go func() { campaign <- el.Campaign(sctx, e.cfg.ID) }()

	hb := time.NewTicker(max(e.cfg.TTL/3, 100*time.Millisecond))
	defer hb.Stop()
	poll := time.NewTicker(min(time.Second, e.cfg.TTL/3))
	defer poll.Stop()
	var lost <-chan struct{} // the leadership context's end
	for {
		select {
		case <-sctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errSessionEnded
		case err := <-campaign:
			if err != nil {
				if sctx.Err() != nil {
					continue // reported by the case above
				}
				return fmt.Errorf("replica: campaigning for the job leadership: %w", err)
			}
			lctx, lcancel := context.WithCancel(sctx)
			l := &leadership{ctx: lctx, cancel: lcancel, key: el.Key(), rev: el.Rev()}
			e.setLeader(l)
			lost = lctx.Done()
		case <-lost:
			// Check found the election key gone while the session had
			// not noticed: the lease expired (a pause past the TTL).
			return fmt.Errorf("%w: its election key is gone", ErrNotLeader)
		case <-hb.C:
			sealed = e.sealed()
			if err := e.publish(sctx, sess.Lease(), sealed); err != nil && sctx.Err() == nil && e.cfg.OnError != nil {
				e.cfg.OnError(err)
			}
		case <-poll.C:
			if s := e.sealed(); s != sealed {
				sealed = s
				if err := e.publish(sctx, sess.Lease(), sealed); err != nil && sctx.Err() == nil && e.cfg.OnError != nil {
					e.cfg.OnError(err)
				}
			}
		}
	}
}

func (e *Etcd) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = e.cli.Revoke(ctx, id)
}

func (e *Etcd) sealed() bool { return e.cfg.Sealed != nil && e.cfg.Sealed() }

// publish writes this replica's record under lease. The record is written
// only when it is missing or already under this lease: a record under
// another live lease belongs to another process with the same id (or this
// replica's previous run, whose lease has not expired yet), and publish
// says so rather than take it over.
func (e *Etcd) publish(ctx context.Context, lease clientv3.LeaseID, sealed bool) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.TTL)
	defer cancel()
	m := Member{ID: e.cfg.ID, Address: e.cfg.Address, Version: e.cfg.Version, Sealed: sealed, Started: e.started, Heartbeat: time.Now().UTC()}
	val, err := json.Marshal(m)
	if err != nil {
		return err
	}
	key := e.memberKey(e.cfg.ID)
	put := clientv3.OpPut(key, string(val), clientv3.WithLease(lease))
	resp, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).Then(put).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("replica: publishing the member record: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if len(kvs) == 1 {
		other := clientv3.LeaseID(kvs[0].Lease)
		ttl, err := e.cli.TimeToLive(ctx, other)
		if err != nil {
			return fmt.Errorf("replica: publishing the member record: %w", err)
		}
		if ttl.TTL > 0 {
			return fmt.Errorf("replica: the id %q is held by another live lease for %ds more: another replica has the same ha.replica_id, or this replica's previous run has not expired yet (retrying)", e.cfg.ID, ttl.TTL)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)
	}
	resp, err = e.cli.Txn(ctx).If(cmp).Then(put).Commit()
	if err != nil {
		return fmt.Errorf("replica: publishing the member record: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("replica: the member record of %q changed while it was published (retrying)", e.cfg.ID)
	}
	return nil
}

func (e *Etcd) setLeader(l *leadership) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lead == l {
		return
	}
	if e.lead != nil {
		e.lead.cancel()
	}
	e.lead = l
	close(e.changed)
	e.changed = make(chan struct{})
}

// Members implements Replica.
func (e *Etcd) Members(ctx context.Context) ([]Member, error) {
	resp, err := e.cli.Txn(ctx).Then(
		clientv3.OpGet(e.prefix+membersDir, clientv3.WithPrefix()),
		clientv3.OpGet(e.prefix+electionDir+"/", clientv3.WithFirstCreate()...),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("listing replicas in etcd: %w", err)
	}
	leader := ""
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		leader = string(kvs[0].Value)
	}
	var out []Member
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, fmt.Errorf("replica record %s is malformed: %w", kv.Key, err)
		}
		m.Leader = leader != "" && m.ID == leader
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// IsLeader implements Replica.
func (e *Etcd) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lead != nil && e.lead.ctx.Err() == nil
}

// Lead implements Replica.
func (e *Etcd) Lead(ctx context.Context) (context.Context, error) {
	for {
		e.mu.Lock()
		l, ch := e.lead, e.changed
		e.mu.Unlock()
		if l != nil && l.ctx.Err() == nil {
			c, cancel := context.WithCancel(l.ctx)
			stop := context.AfterFunc(ctx, cancel)
			context.AfterFunc(c, func() { stop() })
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// Check implements Replica: this replica's election key must still exist
// with the create revision it won with. A key that exists is the first of
// the election (every key created after it has a larger revision), so
// this is one linearizable read.
func (e *Etcd) Check(ctx context.Context) error {
	e.mu.Lock()
	l := e.lead
	e.mu.Unlock()
	if l == nil || l.ctx.Err() != nil {
		return ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.TTL)
	defer cancel()
	resp, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).Commit()
	if err != nil {
		return fmt.Errorf("replica: confirming the job leadership: %w", err)
	}
	if !resp.Succeeded {
		l.cancel()
		return fmt.Errorf("%w: its lease expired (the process was paused or cut off for longer than the lease TTL of %s)", ErrNotLeader, e.cfg.TTL)
	}
	return nil
}

// Close implements Replica: it stops the loop and revokes the lease.
func (e *Etcd) Close() error {
	e.stop()
	<-e.done
	return nil
}
