package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/cofferkms/coffer/internal/storage"
)

// Bounds of the pause between two attempts to re-create a watch.
const (
	minRewatch = 50 * time.Millisecond
	maxRewatch = 2 * time.Second
)

// watchID makes each Watch call's gRPC stream its own: the client shares a
// stream between watches with equal metadata, and a progress request is
// answered only when every watch of the stream is in sync.
var watchID atomic.Uint64

// Watch implements storage.Watcher. It delivers every change under prefix
// after fromRevision, then keeps watching: every Config.ProgressInterval it
// reads the cluster's revision through a quorum and asks for a progress
// notification, and sends storage.EventProgress when one reaches that
// revision, so each progress event proves that every write acknowledged
// before its read (at most about 2 progress intervals, or 1 s, earlier) has
// been delivered; it re-creates the etcd watch from the last revision
// it delivered when the watch breaks (the member it talks to stops, or loses
// its leader); and when the revision to resume from has been compacted it
// sends storage.EventReset with the current revision and resumes after it.
// The channel is closed when ctx is done or the backend is closed.
func (b *Backend) Watch(ctx context.Context, prefix string, fromRevision int64) <-chan storage.Event {
	out := make(chan storage.Event, 64)
	go b.watch(ctx, b.root+prefix, fromRevision, out)
	return out
}

func (b *Backend) watch(ctx context.Context, key string, last int64, out chan<- storage.Event) {
	defer close(out)
	send := func(e storage.Event) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pause := minRewatch
	for ctx.Err() == nil && !b.closed.Load() {
		next, ok, healthy := b.watchOnce(ctx, key, last, send)
		if !ok {
			return
		}
		last = next
		if healthy {
			pause = minRewatch
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, maxRewatch)
	}
}

// watchOnce runs one etcd watch of the changes after last until it ends. It returns the
// revision up to which everything has been delivered, false when the caller
// is gone, and whether the watch delivered anything (a healthy watch is
// re-created at once, a failing one with growing pauses).
func (b *Backend) watchOnce(ctx context.Context, key string, last int64, send func(storage.Event) bool) (int64, bool, bool) {
	// Require a leader: a member cut off from the others cancels the
	// watch instead of keeping it open and reporting stale progress.
	wctx := metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "coffer-watch", fmt.Sprint(watchID.Add(1)))
	wctx, cancel := context.WithCancel(wctx)
	defer cancel()
	// Start at last, not last+1, and drop what was delivered already:
	// etcd sends no progress notification to a watch whose start revision
	// is still in the future, which on an idle cluster would be forever.
	wch := b.cli.Watch(wctx, key, clientv3.WithPrefix(), clientv3.WithRev(max(last, 1)), clientv3.WithProgressNotify())
	var gate atomic.Int64 // 0: no fresh read to prove; see requestProgress
	go b.requestProgress(wctx, &gate)

	healthy := false
	progressed := last // the newest progress notification seen
	for resp := range wch {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			// History after last is gone: resume at the current
			// revision and have the consumer read everything again.
			rev, err := b.Revision(ctx)
			if err != nil {
				return last, ctx.Err() == nil, false
			}
			if rev < last {
				rev = last
			}
			if !send(storage.Event{Kind: storage.EventReset, Revision: rev}) {
				return last, false, false
			}
			return rev, true, true
		}
		if resp.Canceled {
			// No leader, or the client is closing: re-create.
			break
		}
		healthy = true
		if resp.IsProgressNotify() {
			rev := resp.Header.Revision
			if rev < progressed {
				continue
			}
			progressed = rev
			// Pass it on only when it reaches a fresh gate, and use
			// each gate once.
			if g := gate.Load(); g > 0 && rev >= g && gate.CompareAndSwap(g, 0) {
				if !send(storage.Event{Kind: storage.EventProgress, Revision: rev}) {
					return last, false, true
				}
			}
			// A progress notification never moves last, the revision
			// events are resumed and deduplicated from: etcd before
			// 3.4.26 and 3.5.8 may answer a progress request of a watch
			// still catching up with the current revision, ahead of
			// events it has yet to send (etcd issue 15220). Dropping
			// those events as delivered would lose changes for good.
			continue
		}
		// A response holds every event of its revisions; events at or
		// below last were delivered before a reconnect.
		delivered := last
		for _, ev := range resp.Events {
			rev := ev.Kv.ModRevision
			if rev <= delivered {
				continue
			}
			e := storage.Event{Kind: storage.EventPut, Key: string(ev.Kv.Key[len(b.root):]), Revision: rev}
			if ev.Type == mvccpb.DELETE {
				e.Kind = storage.EventDelete
			} else {
				e.Value = bytes.Clone(ev.Kv.Value)
			}
			if !send(e) {
				return last, false, true
			}
			last = max(last, rev)
		}
	}
	return last, ctx.Err() == nil, healthy
}

// requestProgress runs beside one etcd watch until ctx ends. Every
// ProgressInterval it reads the cluster's revision with a linearizable read
// (a quorum answers it), offers that revision as the gate the next progress
// event must reach, and asks the watch's member for a progress notification.
//
// The gate is what makes a progress event a proof of freshness: a member
// cut off from the others still answers progress requests, with its own
// stale revision, until it notices it has no leader. Its answer is below the
// gate and is not passed on. A read that takes longer than gateBound proves
// too little about "now" and is not used.
func (b *Backend) requestProgress(ctx context.Context, gate *atomic.Int64) {
	t := time.NewTicker(b.cfg.ProgressInterval)
	defer t.Stop()
	bound := b.gateBound()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, bound)
		resp, err := b.cli.Get(rctx, b.root, clientv3.WithCountOnly())
		cancel()
		if err != nil {
			continue
		}
		gate.Store(resp.Header.Revision)
		// While the stream reconnects the request waits; bound it so
		// the ticks do not pile up.
		rctx, cancel = context.WithTimeout(ctx, b.cfg.ProgressInterval)
		b.cli.RequestProgress(rctx)
		cancel()
	}
}

// gateBound is the longest a gate read may take (see requestProgress).
func (b *Backend) gateBound() time.Duration { return max(2*b.cfg.ProgressInterval, time.Second) }
