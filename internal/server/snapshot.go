package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/snapshot"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/sys"
)

// ServeSnapshots adds GET /v1/sys/storage/snapshot (sys:Snapshot): a
// snapshot of the whole of store (internal/snapshot,
// docs/snapshot-format.md) taken from one consistent view and still
// barrier-encrypted. It is an operator action: the root token, or a policy
// that names it. store is the raw backend the barrier runs on (not a
// metrics wrapper), and must be a storage.Snapshotter.
//
// The view is first spooled to an unlinked temporary file, so the store's
// read transaction (bbolt) or pinned revision (etcd) lasts as long as a
// local copy, not as long as a slow client. The request is recorded with
// the snapshot's revision, count and checksum like every other (handle),
// and only once the record is written is the file streamed.
func (s *Server) ServeSnapshots(store storage.Backend) {
	sn := &snapshots{store: store}
	h := handle(s, route{action: "sys:Snapshot"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.SnapshotInfo, error) {
			return sn.take(ctx)
		})
	s.mux.HandleFunc("GET /v1/sys/storage/snapshot", func(w http.ResponseWriter, r *http.Request) {
		// handle answers a success with writeJSON, once, after the record
		// is written: the writer below swaps that answer for the stream.
		// Errors (and a failed record) pass through as JSON.
		sw := &snapshotWriter{ResponseWriter: w}
		defer func() {
			if sw.err != nil {
				// The record says ok: the snapshot was taken. The client
				// got a short file, which its checksum check refuses.
				s.log.Warn("sending a snapshot failed; the client got a truncated file", "request_id", w.Header().Get("X-Request-Id"),
					"sent", sw.sent, "bytes", sw.size, "error", sw.err)
			}
			sw.close()
		}()
		h(sw, r.WithContext(context.WithValue(r.Context(), snapshotWriterKey{}, sw)))
	})
}

type snapshotWriterKey struct{}

// snapshots is the state of the snapshot route.
type snapshots struct {
	store storage.Backend
	busy  atomic.Bool
}

// take spools a snapshot and hands it to the request's writer.
func (sn *snapshots) take(ctx context.Context) (client.SnapshotInfo, error) {
	sw, _ := ctx.Value(snapshotWriterKey{}).(*snapshotWriter)
	if sw == nil {
		return client.SnapshotInfo{}, fmt.Errorf("snapshot route called without its writer")
	}
	if _, ok := sn.store.(storage.Snapshotter); !ok {
		return client.SnapshotInfo{}, &apiError{http.StatusNotImplemented, "not_supported", "this storage backend cannot take a consistent snapshot"}
	}
	// Each snapshot holds a spool file as large as the store: one at a
	// time.
	if !sn.busy.CompareAndSwap(false, true) {
		return client.SnapshotInfo{}, &apiError{http.StatusServiceUnavailable, "busy", "a snapshot is already being taken on this server; retry when it is done"}
	}
	release := func() { sn.busy.Store(false) }
	f, err := os.CreateTemp("", "coffer-snapshot-*")
	if err != nil {
		release()
		return client.SnapshotInfo{}, fmt.Errorf("snapshot spool file: %w", err)
	}
	// Unlinked at once: the spool goes with its descriptor, whatever
	// happens to the request.
	_ = os.Remove(f.Name())
	sum, err := snapshot.Save(ctx, sn.store, f, snapshot.SaveOptions{CofferVersion: sys.Version})
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		release()
		return client.SnapshotInfo{}, err
	}
	sw.f, sw.size, sw.release = f, sum.Bytes, release
	sw.name = "coffer-" + sum.Created.Format("20060102T150405Z") + ".snap"
	sw.checksum = sum.Checksum
	if rec := recordOf(ctx); rec != nil {
		rec.Detail = fmt.Sprintf("snapshot revision=%d entries=%d bytes=%d sha256=%s", sum.Revision, sum.Count, sum.Bytes, sum.Checksum)
	}
	return client.SnapshotInfo{Revision: sum.Revision, Entries: sum.Count, Bytes: sum.Bytes, Checksum: sum.Checksum}, nil
}

// snapshotWriter sends the spooled snapshot in place of a 200 JSON answer.
type snapshotWriter struct {
	http.ResponseWriter
	f        *os.File // nil until a snapshot is taken
	size     int64
	name     string
	checksum string
	release  func()
	// streaming is set once the 200 answer is being replaced.
	streaming bool
	sent      int64
	err       error
}

func (sw *snapshotWriter) WriteHeader(status int) {
	if sw.f == nil || status != http.StatusOK {
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	sw.streaming = true
	h := sw.Header()
	h.Set("Content-Type", "application/vnd.coffer.snapshot")
	h.Set("Content-Length", strconv.FormatInt(sw.size, 10))
	h.Set("Content-Disposition", `attachment; filename="`+sw.name+`"`)
	h.Set("X-Coffer-Snapshot-Sha256", sw.checksum)
	// The server's write timeout suits JSON answers; a large store at a
	// modest 1 MiB/s gets the time it needs, and a stalled client is
	// still cut off.
	_ = http.NewResponseController(sw.ResponseWriter).SetWriteDeadline(time.Now().Add(time.Minute + time.Duration(sw.size>>20)*time.Second))
	sw.ResponseWriter.WriteHeader(http.StatusOK)
	sw.sent, sw.err = io.Copy(sw.ResponseWriter, sw.f)
}

// Write drops the JSON body of the replaced answer.
func (sw *snapshotWriter) Write(p []byte) (int, error) {
	if sw.streaming {
		return len(p), nil
	}
	return sw.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (sw *snapshotWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// close releases the spool file and the one-at-a-time slot.
func (sw *snapshotWriter) close() {
	if sw.f == nil {
		return
	}
	sw.f.Close()
	sw.release()
}

// OpenOfflineStorage opens the storage cfg names for a tool that works on
// it while no server runs (snapshot restore): the bbolt file, failing at
// once when a server holds its lock, or the etcd prefix, refused while
// running replicas keep leased records beside it. It does not retry. The
// string describes the store for messages.
func OpenOfflineStorage(ctx context.Context, cfg Config) (storage.Backend, string, error) {
	cfg.Dev = false
	where, err := chooseStorage(cfg, "")
	if err != nil {
		return nil, "", err
	}
	if where.etcd == nil {
		b, err := bolt.Open(where.boltPath, bolt.Options{LockTimeout: -1})
		if errors.Is(err, bolt.ErrLocked) {
			return nil, "", fmt.Errorf("%w: a coffer server is probably running on it; stop it first (this works offline)", err)
		}
		if err != nil {
			return nil, "", err
		}
		return b, "bbolt file " + where.boltPath, nil
	}
	ecfg, err := where.etcd.backend()
	if err != nil {
		return nil, "", err
	}
	b, err := etcd.Open(ctx, ecfg)
	if err != nil {
		return nil, "", fmt.Errorf("storage.etcd: %w", err)
	}
	if err := RefuseLiveReplicas(ctx, b); err != nil {
		b.Close()
		return nil, "", err
	}
	return b, where.describe(), nil
}

// RefuseLiveReplicas fails while replicas running on b keep leased
// records beside its prefix (internal/replica): an offline tool must not
// write under them.
func RefuseLiveReplicas(ctx context.Context, b *etcd.Backend) error {
	live, err := b.LeasedKeys(ctx)
	if err != nil {
		return err
	}
	if len(live) > 0 {
		return fmt.Errorf("replicas are running on etcd prefix %s (%d leased records, such as %s): stop every replica first, and wait for their leases (ha.lease_ttl) to end",
			b.Prefix(), len(live), strings.Join(live[:1], ""))
	}
	return nil
}
