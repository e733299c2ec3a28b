package sys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage"
)

// Cache coherence across replicas.
//
// Every service behind the barrier serves from memory: key snapshots,
// tokens, the IAM snapshot, the barrier keyring. When several replicas
// share one store (etcd), a change made on one must reach the caches of
// all. After an unseal, the follow loop takes the store's revision, the
// services load, and a watch from that revision delivers every later
// change in order, each with the value stored (still sealed). The loop
// opens the value through the barrier (Barrier.Open: the same checks as a
// read) and hands the change to the service owning the path (Refresh),
// which applies it only when it is newer than what its cache holds: no
// store read per change, so a replica keeps up with a busy writer. This
// replica's own writes update its caches directly, as on a single node,
// with the revision they stored; their events find nothing new. A change
// that cannot be applied (a value that does not open or decode) is
// retried by reading the path from the store again, and a watch that lost
// history (EventReset) makes every service read everything again.
//
// Freshness. A cache is only as good as the proof that no change was
// missed. The loop records the last moment T it could prove its caches
// held every change committed before T: every bound/4 (at most every
// 250ms) it reads the store's current revision R (a quorum read) at time
// T, and once the applied revision reaches R (through change events, or a
// progress event saying every change up to some revision >= R was
// delivered) the caches are proven fresh as of T. A resync after lost
// history proves freshness as of its start. A refresh that failed blocks
// the proof until it succeeds. Fresh returns an error when the last proof
// is older than the bound (ha.freshness_bound, default 2s): a lost watch,
// an unreachable store or a paused process past the bound makes the
// replica refuse credential-authenticated requests rather than honour a
// revoked token, and it serves again, without a restart, as soon as a new
// proof arrives.

// DefaultFreshnessBound is how long a replica serves credentials without a
// new proof that its caches are fresh.
const DefaultFreshnessBound = 2 * time.Second

// ErrStale is wrapped by Fresh when the replica cannot prove that its
// caches hold every change (a revocation above all) made on other
// replicas.
var ErrStale = errors.New("replica stale")

// Follow makes the system service follow changes made by other replicas
// through w after every unseal, and refuse credentials (Fresh) when it
// cannot prove its caches fresh within bound (0: DefaultFreshnessBound).
// Call it once, before the first unseal; log may be nil.
func (s *Sys) Follow(w storage.Watcher, bound time.Duration, log *slog.Logger) {
	if bound <= 0 {
		bound = DefaultFreshnessBound
	}
	if log == nil {
		log = slog.Default()
	}
	s.follow.mu.Lock()
	s.follow.w, s.follow.bound, s.follow.log = w, bound, log
	s.follow.now = time.Now
	s.follow.mu.Unlock()
	if s.Tokens != nil {
		s.Tokens.SetSync(s.Sync)
		s.Tokens.SetRevision(w.Revision)
	}
}

// follower is the follow loop's state. The zero value follows nothing.
type follower struct {
	mu    sync.Mutex
	w     storage.Watcher
	bound time.Duration
	log   *slog.Logger
	now   func() time.Time

	cancel context.CancelFunc
	done   chan struct{}

	running  bool
	proof    time.Time     // last moment the caches were proven fresh
	applied  int64         // every change up to this revision is applied
	advanced chan struct{} // closed and replaced whenever applied grows
	probes   []probe       // revisions read from the store, waiting for applied
	failed   map[string]error
	mismatch error // the stored keyring is not ours (barrier.ErrKeyringMismatch)
	lastErr  error
}

// maxProbeEvery is the longest pause between two revision probes: a
// proof is normally this fresh, far inside the bound.
const maxProbeEvery = 250 * time.Millisecond

// maxProbes bounds the probes waiting for the watch to catch up.
const maxProbes = 64

type probe struct {
	at  time.Time
	rev int64
}

// revision returns the store's revision before a load, or 0 when nothing
// is followed.
func (f *follower) revision(ctx context.Context) (int64, time.Time, error) {
	f.mu.Lock()
	w, now := f.w, f.now
	f.mu.Unlock()
	if w == nil {
		return 0, time.Time{}, nil
	}
	at := now()
	rev, err := w.Revision(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("reading the store's revision: %w", err)
	}
	return rev, at, nil
}

// start runs the follow loop from rev, read at the time at before the
// services loaded.
func (f *follower) start(s *Sys, rev int64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w == nil || f.running {
		return
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), inLoop{}, true))
	f.cancel, f.done, f.running, f.advanced = cancel, make(chan struct{}), true, make(chan struct{})
	f.proof, f.applied, f.probes, f.failed, f.mismatch, f.lastErr = at, rev, nil, map[string]error{}, nil, nil
	done := f.done
	go func() {
		defer close(done)
		f.run(ctx, s, rev)
	}()
	go func() { f.probeLoop(ctx) }()
}

// stopWait bounds how long a seal waits for the follow loop to leave a
// refresh (a store that ignores cancellation must not hold up a seal).
const stopWait = 3 * time.Second

// stop ends the follow loop and waits (boundedly) for it.
func (f *follower) stop() {
	f.mu.Lock()
	if !f.running {
		f.mu.Unlock()
		return
	}
	f.running = false
	cancel, done := f.cancel, f.done
	f.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-time.After(stopWait):
	}
}

// maxBatch bounds the events the loop applies before it records them:
// under a steady stream of changes it takes the follower's lock (and
// moves the proof) once per batch, not once per change.
const maxBatch = 256

func (f *follower) run(ctx context.Context, s *Sys, rev int64) {
	ch := f.w.Watch(ctx, "", rev)
	batch := make([]storage.Event, 0, maxBatch)
	for ev := range ch {
		// Take what the watch has already delivered, without waiting.
		batch = append(batch[:0], ev)
	drain:
		for len(batch) < maxBatch {
			select {
			case e, ok := <-ch:
				if !ok {
					break drain
				}
				batch = append(batch, e)
			default:
				break drain
			}
		}
		f.handle(ctx, s, batch)
	}
}

// outcome is the result of applying one change, to be recorded.
type outcome struct {
	path string
	err  error
}

// handle applies a batch of events in order. Changes are recorded (note,
// applied revision, proof) together, once before any other kind of event
// and once at the end.
func (f *follower) handle(ctx context.Context, s *Sys, batch []storage.Event) {
	var done []outcome
	var last int64
	record := func() {
		if len(done) == 0 {
			return
		}
		f.mu.Lock()
		for _, o := range done {
			f.note(o.path, o.err)
		}
		f.advanceLocked(last)
		f.settleLocked(time.Time{})
		f.mu.Unlock()
		done = done[:0]
	}
	defer record()
	for _, ev := range batch {
		switch ev.Kind {
		case storage.EventPut, storage.EventDelete:
			done = append(done, outcome{ev.Key, s.apply(ctx, ev)})
			last = ev.Revision
			continue
		}
		record()
		switch ev.Kind {
		case storage.EventProgress:
			// Every change up to ev.Revision is applied. That proves
			// freshness as of the moment the store was at that revision,
			// which the event does not say: the probes that revision
			// reaches carry the time.
			f.retryFailed(ctx, s)
			f.mu.Lock()
			f.advanceLocked(ev.Revision)
			f.settleLocked(time.Time{})
			f.mu.Unlock()
		case storage.EventReset:
			at := f.now()
			err := s.resync(ctx)
			f.mu.Lock()
			if err == nil {
				clear(f.failed)
			}
			f.note("", err)
			f.advanceLocked(ev.Revision)
			f.settleLocked(at)
			f.mu.Unlock()
		}
	}
}

// advanceLocked records that every change up to rev is applied and wakes
// the Syncs waiting for it. The caller holds mu.
func (f *follower) advanceLocked(rev int64) {
	if rev > f.applied {
		f.applied = rev
		f.wakeLocked()
	}
}

// wakeLocked wakes the Syncs waiting. The caller holds mu.
func (f *follower) wakeLocked() {
	close(f.advanced)
	f.advanced = make(chan struct{})
}

// note records the outcome of refreshing path ("" for a full resync).
// The caller holds mu.
func (f *follower) note(path string, err error) {
	if errors.Is(err, barrier.ErrKeyringMismatch) {
		f.mismatch = err
	} else if path == barrier.KeyringPath || path == "" {
		if err == nil {
			f.mismatch = nil
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return
		}
		f.failed[path] = err
		f.lastErr = err
		f.log.Error("replica cache refresh failed; credentials are refused until it succeeds", "path", path, "error", err)
		return
	}
	if _, ok := f.failed[path]; ok {
		delete(f.failed, path)
		f.wakeLocked()
	}
}

// retryFailed refreshes again the paths whose refresh failed, reading
// them from the store: the value of the event that failed may be outdated
// by now.
func (f *follower) retryFailed(ctx context.Context, s *Sys) {
	f.mu.Lock()
	paths := make([]string, 0, len(f.failed))
	for p := range f.failed {
		paths = append(paths, p)
	}
	f.mu.Unlock()
	for _, p := range paths {
		var err error
		if p == "" {
			err = s.resync(ctx)
		} else {
			err = s.reread(ctx, p)
		}
		f.mu.Lock()
		f.note(p, err)
		f.mu.Unlock()
	}
}

// settleLocked moves the proof forward: to at (a progress event or a
// resync, when not zero) and to every probe the applied revision reached,
// unless a refresh is still failing. The caller holds mu.
func (f *follower) settleLocked(at time.Time) {
	if len(f.failed) > 0 {
		return
	}
	if at.After(f.proof) {
		f.proof = at
	}
	n := 0
	for _, p := range f.probes {
		if p.rev <= f.applied {
			if p.at.After(f.proof) {
				f.proof = p.at
			}
			continue
		}
		f.probes[n] = p
		n++
	}
	f.probes = f.probes[:n]
}

// probeLoop reads the store's revision every bound/4 (at most 250ms); the caches are
// proven fresh as of the read once the follow loop has applied it. This
// proves freshness while a steady stream of changes keeps a watch from
// sending progress events.
func (f *follower) probeLoop(ctx context.Context) {
	f.mu.Lock()
	every := min(f.bound/4, maxProbeEvery)
	f.mu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := f.now()
		pctx, cancel := context.WithTimeout(ctx, f.bound)
		rev, err := f.w.Revision(pctx)
		cancel()
		f.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				f.lastErr = fmt.Errorf("reading the store's revision: %w", err)
			}
		} else {
			if len(f.probes) == maxProbes {
				// The watch lags far behind: the newest probes prove
				// the most once it catches up.
				f.probes = append(f.probes[:0], f.probes[1:]...)
			}
			f.probes = append(f.probes, probe{at: at, rev: rev})
			f.settleLocked(time.Time{})
		}
		f.mu.Unlock()
	}
}

// fresh implements Sys.Fresh.
func (f *follower) fresh() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w == nil || !f.running {
		return nil
	}
	if f.mismatch != nil {
		return f.mismatch
	}
	age := f.now().Sub(f.proof)
	if age <= f.bound {
		return nil
	}
	why := "the store's current revision could not be read and seen delivered by its watch in time (store unreachable or overloaded, watch lost, or this process paused)"
	if len(f.failed) > 0 {
		why = "a cache refresh keeps failing"
	}
	if f.lastErr != nil {
		why += "; last error: " + truncateErr(f.lastErr.Error())
	}
	return fmt.Errorf("%w: this replica cannot prove that it has seen every change made on other replicas (revocations above all) for %s, longer than its freshness bound of %s; %s. "+
		"It refuses credentials until it catches up; send the request to another replica or retry", ErrStale, age.Round(time.Millisecond), f.bound, why)
}

func truncateErr(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// inLoop marks the follow loop's context: a refresh that revokes tokens
// (a revocation mark, a descendant) must not wait for the loop it runs in.
type inLoop struct{}

// Sync waits until this replica's caches hold every change stored by any
// replica before Sync was called: it reads the store's revision and waits
// for the follow loop to apply it, with no refresh failing, at most the
// freshness bound. A
// revocation calls it first (auth.Tokens.SetSync), so a token another
// replica stored before the revocation started is found and revoked too.
// It returns nil at once when nothing is followed or it is called from the
// follow loop itself, and an error wrapping ErrStale when the loop does not
// catch up in time.
func (s *Sys) Sync(ctx context.Context) error { return s.follow.sync(ctx) }

func (f *follower) sync(ctx context.Context) error {
	if ctx.Value(inLoop{}) != nil {
		return nil
	}
	f.mu.Lock()
	w, running, bound := f.w, f.running, f.bound
	f.mu.Unlock()
	if w == nil || !running {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	rev, err := w.Revision(wctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: this replica could not read the store's revision within %s to make sure it has seen every token stored on other replicas (%v); nothing was revoked: retry, or use another replica", ErrStale, bound, err)
	}
	for {
		f.mu.Lock()
		caughtUp := f.applied >= rev && len(f.failed) == 0
		advanced := f.advanced
		f.mu.Unlock()
		if caughtUp {
			return nil
		}
		select {
		case <-advanced:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: this replica's watch did not deliver the store's changes up to revision %d within %s, so it cannot be sure it has seen every token stored on other replicas; nothing was revoked: retry, or use another replica", ErrStale, rev, bound)
		}
	}
}

// Fresh returns nil when this replica can serve credential-authenticated
// requests: it follows no shared store (bbolt), it is sealed (requests are
// refused as sealed anyway), or it has proven within its freshness bound
// that its caches hold every change made on other replicas. Otherwise the
// error wraps ErrStale (or barrier.ErrKeyringMismatch) and says since when
// and why.
func (s *Sys) Fresh() error { return s.follow.fresh() }

// Follows reports whether a follow loop is running (for tests and status).
func (s *Sys) Follows() bool {
	s.follow.mu.Lock()
	defer s.follow.mu.Unlock()
	return s.follow.running
}

// apply hands one watch event to the service that caches its path, as a
// change whose value the barrier opened.
func (s *Sys) apply(ctx context.Context, ev storage.Event) error {
	path := ev.Key
	switch {
	case path == barrier.KeyringPath:
		return s.Barrier.ReloadKeyring(ctx)
	case strings.HasPrefix(path, "core/"):
		return nil
	case s.owner(path) == "":
		return nil
	}
	c := storage.Change{Path: path, Revision: ev.Revision, Deleted: ev.Kind == storage.EventDelete}
	if s.owner(path) == "secrets" {
		// The secrets service caches no record: a change only wakes the
		// waiters of that secret, which read it again through the barrier.
		return s.Secrets.Refresh(ctx, c)
	}
	if !c.Deleted {
		e, err := s.Barrier.Open(ctx, path, storage.Entry{Key: path, Value: ev.Value, Revision: ev.Revision})
		if err != nil {
			return fmt.Errorf("opening the change of %s at revision %d: %w", path, ev.Revision, err)
		}
		c.Value = e.Value
	}
	switch s.owner(path) {
	case "keys":
		return s.Keys.Refresh(ctx, c)
	case "auth":
		return s.Tokens.Refresh(ctx, c)
	case "iam":
		return s.IAM.Refresh(ctx, c)
	}
	return nil
}

// reread brings the cache of one path in line with what is stored now,
// reading it (a retry of a change that could not be applied).
func (s *Sys) reread(ctx context.Context, path string) error {
	if path == barrier.KeyringPath {
		return s.Barrier.ReloadKeyring(ctx)
	}
	switch s.owner(path) {
	case "keys":
		return s.Keys.Reread(ctx, path)
	case "auth":
		return s.Tokens.Reread(ctx, path)
	case "iam":
		return s.IAM.Reread(ctx, path)
	case "secrets":
		return s.Secrets.Refresh(ctx, storage.Change{Path: path})
	}
	return nil
}

// owner names the service that caches path, or "" for none.
func (s *Sys) owner(path string) string {
	switch {
	case strings.HasPrefix(path, "keys/"), strings.HasPrefix(path, "aliases/"):
		return "keys"
	case strings.HasPrefix(path, "auth/"):
		return "auth"
	case strings.HasPrefix(path, "iam/") && s.IAM != nil:
		return "iam"
	case strings.HasPrefix(path, "secrets/meta/") && s.Secrets != nil:
		return "secrets"
	}
	return ""
}

// resync reads every cache again after a watch lost history.
func (s *Sys) resync(ctx context.Context) error {
	if err := s.Barrier.ReloadKeyring(ctx); err != nil {
		return err
	}
	errs := []error{s.Keys.Resync(ctx), s.Tokens.Resync(ctx)}
	if s.IAM != nil {
		errs = append(errs, s.IAM.Resync(ctx))
	}
	if s.Secrets != nil {
		errs = append(errs, s.Secrets.Resync(ctx))
	}
	return errors.Join(errs...)
}
