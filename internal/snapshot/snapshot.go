package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// ErrNotEmpty is returned by Restore when the target store holds entries
// and RestoreOptions.Force is not set.
var ErrNotEmpty = errors.New("the target store is not empty")

// ErrMismatch is returned by Copy when the target holds a different value
// for a key of the source, or keys the source does not have, and
// CopyOptions.Force is not set; and by Restore and Copy when the target
// does not read back as the source.
var ErrMismatch = errors.New("the target does not match the source")

// Batch bounds of writes to a target. etcd refuses a transaction of more
// than 128 operations or 1.5 MiB by default.
const (
	defaultBatchOps   = 64
	defaultBatchBytes = 512 << 10
)

// ViewOf calls fn with a view of b: consistent when b is a
// storage.Snapshotter; otherwise b is listed and read key by key, which is
// only consistent when nothing else writes to b (an offline store), and the
// view's revision is 0.
func ViewOf(ctx context.Context, b storage.Backend, fn func(storage.View) error) error {
	if s, ok := b.(storage.Snapshotter); ok {
		return s.Snapshot(ctx, fn)
	}
	keys, err := b.List(ctx, "")
	if err != nil {
		return err
	}
	entries := func(yield func(storage.Entry, error) bool) {
		for _, k := range keys {
			e, err := b.Get(ctx, k)
			if errors.Is(err, storage.ErrNotFound) {
				err = fmt.Errorf("key %q was deleted while the store was read: is a server still writing to it?", k)
			}
			if !yield(e, err) || err != nil {
				return
			}
		}
	}
	return fn(storage.View{Count: int64(len(keys)), Entries: entries})
}

// SaveOptions describe the snapshot Save writes.
type SaveOptions struct {
	// CofferVersion is the version of this Coffer (sys.Version).
	CofferVersion string
	// Backend names the store's kind in the header; default: what the
	// view says ("bbolt", "etcd"), or "unknown".
	Backend string
	// Now is the clock of the header's created time; default time.Now.
	Now func() time.Time
}

// Save writes a snapshot of one consistent view of src to w. src must be a
// storage.Snapshotter unless nothing else writes to it.
func Save(ctx context.Context, src storage.Backend, w io.Writer, opts SaveOptions) (Summary, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	cw := &countWriter{w: w}
	var sum Summary
	err := ViewOf(ctx, src, func(v storage.View) error {
		kind := opts.Backend
		if kind == "" {
			kind = v.Backend
		}
		if kind == "" {
			kind = "unknown"
		}
		h := Header{Format: FormatVersion, CofferVersion: opts.CofferVersion, Backend: kind,
			Revision: v.Revision, Created: now().UTC().Truncate(time.Nanosecond), Count: uint64(v.Count)}
		sw, err := NewWriter(cw, h)
		if err != nil {
			return err
		}
		for e, err := range v.Entries {
			if err != nil {
				return err
			}
			if err := sw.Add(e.Key, e.Value); err != nil {
				return err
			}
		}
		if err := sw.Close(); err != nil {
			return err
		}
		c, d := sw.Checksum(), sw.Digest()
		sum = Summary{Header: h, Checksum: fmt.Sprintf("%x", c[:]), Digest: fmt.Sprintf("%x", d[:])}
		return nil
	})
	if err != nil {
		return Summary{}, fmt.Errorf("taking a snapshot: %w", err)
	}
	sum.Bytes = cw.n
	return sum, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// CofferVersion is this Coffer's version: a snapshot from a newer one
	// is refused.
	CofferVersion string
	// Force deletes what the target holds before restoring; without it a
	// non-empty target is refused.
	Force bool
	// Progress, when set, is called after each batch written.
	Progress func(written, total uint64)
	batch    batchLimits
}

// RestoreResult is what Restore did.
type RestoreResult struct {
	Snapshot Summary `json:"snapshot"`
	// Deleted is the number of entries the target held before (--force).
	Deleted int `json:"deleted"`
	// Written is the number of entries restored.
	Written uint64 `json:"written"`
	// Verified: the target read back with the snapshot's count and
	// content digest.
	Verified bool `json:"verified"`
}

// Restore writes the snapshot in f into dst, which must be empty (or
// opts.Force). It reads f twice: once to verify all of it before anything
// is written, once to write. Entries are written in batches, each key on
// the condition that it does not exist yet, so a server writing to dst at
// the same time makes the restore fail instead of mixing. At the end dst is
// read back and compared with the snapshot by count and content digest.
func Restore(ctx context.Context, f io.ReadSeeker, dst storage.Backend, opts RestoreOptions) (RestoreResult, error) {
	var res RestoreResult
	sum, err := Verify(f, ReadOptions{CofferVersion: opts.CofferVersion})
	if err != nil {
		return res, err
	}
	res.Snapshot = sum
	existing, err := dst.List(ctx, "")
	if err != nil {
		return res, fmt.Errorf("listing the target: %w", err)
	}
	if len(existing) > 0 {
		if !opts.Force {
			return res, fmt.Errorf("%w: it holds %d entries (first %q); restore into an empty store, or pass --force to delete them first", ErrNotEmpty, len(existing), existing[0])
		}
		b := newBatcher(ctx, dst, opts.batch)
		for _, k := range existing {
			if err := b.add(storage.Delete(k), len(k)); err != nil {
				return res, fmt.Errorf("emptying the target: %w", err)
			}
		}
		if err := b.flush(); err != nil {
			return res, fmt.Errorf("emptying the target: %w", err)
		}
		res.Deleted = len(existing)
	}

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return res, err
	}
	sr, err := NewReader(f, ReadOptions{CofferVersion: opts.CofferVersion})
	if err != nil {
		return res, err
	}
	b := newBatcher(ctx, dst, opts.batch)
	b.done = func(n int) {
		res.Written += uint64(n)
		if opts.Progress != nil {
			opts.Progress(res.Written, sum.Count)
		}
	}
	for {
		key, value, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("the snapshot changed since it was verified: %w", err)
		}
		// The batch keeps the value past Next: copy it.
		op := storage.Op{Kind: storage.OpPut, Key: key, Value: bytes.Clone(value), IfRevision: 0}
		if err := b.add(op, len(key)+len(value)); err != nil {
			return res, restoreWriteError(err)
		}
	}
	if err := b.flush(); err != nil {
		return res, restoreWriteError(err)
	}
	if d := sr.Digest(); fmt.Sprintf("%x", d[:]) != sum.Digest {
		return res, fmt.Errorf("%w: the snapshot changed between its verification and the restore; restore again", ErrMismatch)
	}
	if err := verifyTarget(ctx, dst, sum.Count, sum.Digest); err != nil {
		return res, err
	}
	res.Verified = true
	return res, nil
}

func restoreWriteError(err error) error {
	if errors.Is(err, storage.ErrConflict) {
		return fmt.Errorf("a key appeared in the target during the restore (is a server still running on it? stop every server first): %w", err)
	}
	return fmt.Errorf("writing the target: %w", err)
}

// verifyTarget reads dst back and compares its count and content digest.
func verifyTarget(ctx context.Context, dst storage.Backend, count uint64, digest string) error {
	d := NewDigest()
	err := ViewOf(ctx, dst, func(v storage.View) error {
		for e, err := range v.Entries {
			if err != nil {
				return err
			}
			d.Add(e.Key, e.Value)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the target back: %w", err)
	}
	got := d.Sum()
	if d.Count() != count || fmt.Sprintf("%x", got[:]) != digest {
		return fmt.Errorf("%w: the target reads back %d entries with digest %x, want %d entries with digest %s (did something else write to it?)",
			ErrMismatch, d.Count(), got[:], count, digest)
	}
	return nil
}

// batchLimits bound one Apply.
type batchLimits struct{ ops, bytes int }

// batcher groups ops into Applies within limits.
type batcher struct {
	ctx   context.Context
	dst   storage.Backend
	lim   batchLimits
	ops   []storage.Op
	size  int
	done  func(n int)
	count int // ops applied
}

func newBatcher(ctx context.Context, dst storage.Backend, lim batchLimits) *batcher {
	if lim.ops <= 0 {
		lim.ops = defaultBatchOps
	}
	if lim.bytes <= 0 {
		lim.bytes = defaultBatchBytes
	}
	return &batcher{ctx: ctx, dst: dst, lim: lim}
}

// add queues op (size bytes), applying the queue first when op would take
// it over its limits.
func (b *batcher) add(op storage.Op, size int) error {
	if len(b.ops) > 0 && (len(b.ops) >= b.lim.ops || b.size+size > b.lim.bytes) {
		if err := b.flush(); err != nil {
			return err
		}
	}
	b.ops = append(b.ops, op)
	b.size += size
	return nil
}

// flush applies the queued ops as one atomic batch.
func (b *batcher) flush() error {
	if len(b.ops) == 0 {
		return nil
	}
	if err := b.dst.Apply(b.ctx, b.ops...); err != nil {
		return err
	}
	n := len(b.ops)
	b.count += n
	clear(b.ops)
	b.ops, b.size = b.ops[:0], 0
	if b.done != nil {
		b.done(n)
	}
	return nil
}

// valueSum is how Copy remembers a target value: its hash and revision.
type valueSum struct {
	sum  [32]byte
	rev  int64
	seen bool
}

// CopyOptions tune Copy.
type CopyOptions struct {
	// Force overwrites target values that differ from the source and
	// deletes target keys the source does not have; without it Copy
	// refuses before writing anything.
	Force bool
	// Progress, when set, is called after each batch written.
	Progress func(written, total uint64)
	batch    batchLimits
}

// CopyResult is what Copy did.
type CopyResult struct {
	// SourceRevision is the revision of the source view copied.
	SourceRevision int64 `json:"source_revision"`
	// Entries is the number of entries of the source.
	Entries uint64 `json:"entries"`
	// Copied were missing from the target and written.
	Copied uint64 `json:"copied"`
	// Skipped were already in the target with the same value (a resumed
	// copy).
	Skipped uint64 `json:"skipped"`
	// Overwritten had a different value in the target (Force).
	Overwritten uint64 `json:"overwritten"`
	// Deleted were in the target but not in the source (Force).
	Deleted uint64 `json:"deleted"`
	// Digest is the content digest of the source, which the target now
	// reads back with.
	Digest string `json:"digest"`
	// Verified: the target read back with the source's count and digest.
	Verified bool `json:"verified"`
}

// Copy makes dst hold exactly the entries of one consistent view of src,
// values verbatim. It is resumable: keys dst already holds with the same
// value are skipped, so running it again after an interruption finishes
// the job. A key dst holds with a different value, or a key src does not
// have, stops it before anything is written, unless opts.Force. Writes are
// conditional on the revision dst had when Copy read it, so a concurrent
// writer makes Copy fail rather than be overwritten. At the end dst is
// read back and compared with the source by count and content digest.
//
// Both stores should be offline (no server running on them); src must be a
// storage.Snapshotter otherwise.
func Copy(ctx context.Context, src, dst storage.Backend, opts CopyOptions) (CopyResult, error) {
	var res CopyResult
	have := make(map[string]*valueSum)
	err := ViewOf(ctx, dst, func(v storage.View) error {
		for e, err := range v.Entries {
			if err != nil {
				return err
			}
			have[e.Key] = &valueSum{sum: sha256.Sum256(e.Value), rev: e.Revision}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("reading the target: %w", err)
	}
	err = ViewOf(ctx, src, func(v storage.View) error {
		res.SourceRevision, res.Entries = v.Revision, uint64(v.Count)
		// First pass: compare, write nothing.
		var differ []string
		for e, err := range v.Entries {
			if err != nil {
				return fmt.Errorf("reading the source: %w", err)
			}
			t, ok := have[e.Key]
			if !ok {
				continue
			}
			t.seen = true
			if t.sum != sha256.Sum256(e.Value) && len(differ) < 3 {
				differ = append(differ, e.Key)
			}
		}
		var extra []string
		for k, t := range have {
			if !t.seen {
				extra = append(extra, k)
			}
		}
		if !opts.Force {
			switch {
			case len(differ) > 0:
				return fmt.Errorf("%w: the target holds a different value for %q: it is not a partial copy of this source (another installation, or the source changed since an earlier run); pass --force to overwrite the target",
					ErrMismatch, differ)
			case len(extra) > 0:
				return fmt.Errorf("%w: the target holds %d keys the source does not have (for example %q); pass --force to delete them",
					ErrMismatch, len(extra), extra[0])
			}
		}

		// Second pass: write what is missing or different.
		b := newBatcher(ctx, dst, opts.batch)
		var written uint64
		b.done = func(n int) {
			written += uint64(n)
			if opts.Progress != nil {
				opts.Progress(written, res.Entries)
			}
		}
		d := NewDigest()
		for e, err := range v.Entries {
			if err != nil {
				return fmt.Errorf("reading the source: %w", err)
			}
			d.Add(e.Key, e.Value)
			op := storage.Op{Kind: storage.OpPut, Key: e.Key, Value: e.Value, IfRevision: 0}
			if t, ok := have[e.Key]; ok {
				if t.sum == sha256.Sum256(e.Value) {
					res.Skipped++
					continue
				}
				op.IfRevision = t.rev
				res.Overwritten++
			} else {
				res.Copied++
			}
			if err := b.add(op, len(e.Key)+len(e.Value)); err != nil {
				return copyWriteError(err)
			}
		}
		for _, k := range extra {
			if err := b.add(storage.Op{Kind: storage.OpDelete, Key: k, IfRevision: have[k].rev}, len(k)); err != nil {
				return copyWriteError(err)
			}
			res.Deleted++
		}
		if err := b.flush(); err != nil {
			return copyWriteError(err)
		}
		if d.Count() != res.Entries {
			return fmt.Errorf("%w: the source yielded %d entries, its view counted %d", ErrMismatch, d.Count(), res.Entries)
		}
		s := d.Sum()
		res.Digest = fmt.Sprintf("%x", s[:])
		return nil
	})
	if err != nil {
		return res, err
	}
	if err := verifyTarget(ctx, dst, res.Entries, res.Digest); err != nil {
		return res, err
	}
	res.Verified = true
	return res, nil
}

func copyWriteError(err error) error {
	if errors.Is(err, storage.ErrConflict) {
		return fmt.Errorf("the target changed during the copy (is a server running on it? stop every server first, then run the copy again): %w", err)
	}
	return fmt.Errorf("writing the target: %w", err)
}
