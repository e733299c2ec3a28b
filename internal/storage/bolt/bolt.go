// Package bolt is the default, single-node storage.Backend, a bbolt file.
//
// The file holds two buckets. "data" maps each key to its 8-byte big-endian
// revision followed by the value. "meta" holds the global revision counter
// (the revision of the last write, also 8-byte big-endian) and the layout
// version. Every Apply is one bbolt read-write transaction, so a batch is
// all-or-nothing, and it is fsynced before Apply returns. All writes of one
// batch share a single new revision, as in etcd.
//
// bbolt takes an exclusive lock on the file, so only one process can open it
// at a time; Open waits Options.LockTimeout for the lock and then fails.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cofferkms/coffer/internal/storage"
)

// DefaultLockTimeout is how long Open waits for the file lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = 2 * time.Second

// fileMode is the permission of a newly created storage file.
const fileMode os.FileMode = 0o600

// formatVersion is the layout this package reads and writes.
const formatVersion = 1

var (
	dataBucket  = []byte("data")
	metaBucket  = []byte("meta")
	revisionKey = []byte("revision")
	formatKey   = []byte("format")
)

// ErrLocked is matched (with errors.Is) by the error Open returns when
// another process holds the storage file's lock.
var ErrLocked = errors.New("storage file is locked by another process")

// lockedError names the locked file; it matches ErrLocked.
type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("storage file %s is locked by another process", e.path)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// errLayout marks stored data that does not follow this package's layout.
var errLayout = errors.New("unexpected layout")

// errNoChange makes Apply roll back a batch that would write nothing, which
// saves the commit's fsync.
var errNoChange = errors.New("no change")

// Options configures Open. The zero value is ready to use.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file lock before failing with ErrLocked. Zero means
	// DefaultLockTimeout; a negative value means fail at once.
	LockTimeout time.Duration
}

// Backend is a storage.Backend in a bbolt file. It is safe for concurrent
// use: reads run in parallel, and writes are serialized by bbolt.
type Backend struct {
	db   *bbolt.DB
	path string
}

var _ storage.Backend = (*Backend)(nil)

// Open opens the storage file at path, creating it with mode 0600 if it does
// not exist. The directory must exist. It fails with an error matching
// ErrLocked if another process has the file open, and with a descriptive
// error if the file is not a valid Coffer storage file.
func Open(path string, opts Options) (b *Backend, err error) {
	if path == "" {
		return nil, errors.New("bolt: empty storage file path")
	}
	timeout := opts.LockTimeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		// bbolt treats 0 as "wait forever"; anything shorter than its
		// retry interval means a single attempt.
		timeout = time.Nanosecond
	}

	if err := preflight(path); err != nil {
		return nil, invalidFile(path, err)
	}

	// bbolt trusts the file it maps: some damage makes it panic, or fault
	// reading the map, rather than return an error. Report those as a bad
	// file. A panic after bbolt.Open returned is cleaned up by db.Close.
	// One inside bbolt.Open leaves a mapping of the file behind, and the
	// mapping keeps the lock until the process exits, however we close
	// the descriptor; preflight exists to catch the known causes first.
	// Faults become panics only in this goroutine, which is one reason the
	// freelist is synced (see below).
	var (
		file *os.File
		db   *bbolt.DB
	)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			} else if file != nil {
				_ = file.Close()
			}
			b, err = nil, invalidFile(path, fmt.Errorf("bbolt: %v", r))
		}
	}()

	db, err = bbolt.Open(path, fileMode, &bbolt.Options{
		Timeout: timeout,
		// With NoFreelistSync, bbolt rebuilds the freelist on open by
		// walking every page in a goroutine of its own, where a damaged
		// page crashes the process beyond any recover. A synced freelist
		// costs one page per commit and keeps Open in this goroutine.
		NoFreelistSync: false,
		NoSync:         false,
		FreelistType:   bbolt.FreelistMapType,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	})
	switch {
	case errors.Is(err, bbolt.ErrTimeout):
		return nil, &lockedError{path: path}
	case errors.Is(err, bbolt.ErrInvalid), errors.Is(err, bbolt.ErrChecksum),
		errors.Is(err, bbolt.ErrVersionMismatch), errors.Is(err, bbolt.ErrInvalidMapping):
		return nil, invalidFile(path, err)
	case err != nil && strings.Contains(err.Error(), "file size too small"):
		// bbolt has no sentinel for a file shorter than its meta pages.
		return nil, invalidFile(path, err)
	case err != nil:
		return nil, fmt.Errorf("open storage file %s: %w", path, err)
	}
	if err := db.Update(initialize); err != nil {
		_ = db.Close()
		if errors.Is(err, errLayout) || errors.Is(err, bbolt.ErrIncompatibleValue) {
			return nil, invalidFile(path, err)
		}
		return nil, fmt.Errorf("initialize storage file %s: %w", path, err)
	}
	// Concurrent Applies share one transaction and one fsync (group
	// commit); a short delay keeps a lone writer's latency low.
	db.MaxBatchDelay = 500 * time.Microsecond
	return &Backend{db: db, path: path}, nil
}

func invalidFile(path string, err error) error {
	return fmt.Errorf("storage file %s is not a valid Coffer storage file (corrupted, or not a bbolt database): %w", path, err)
}

// initialize creates the buckets of a new file and checks those of an
// existing one.
func initialize(tx *bbolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	data, err := tx.CreateBucketIfNotExists(dataBucket)
	if err != nil {
		return err
	}
	switch v := meta.Get(formatKey); {
	case v == nil:
		if err := meta.Put(formatKey, encodeUint(formatVersion)); err != nil {
			return err
		}
	case len(v) != 8:
		return fmt.Errorf("%w: malformed layout version %x", errLayout, v)
	case binary.BigEndian.Uint64(v) != formatVersion:
		return fmt.Errorf("%w: layout version %d, this build reads version %d", errLayout, binary.BigEndian.Uint64(v), formatVersion)
	}
	if _, err := lastRevision(meta); err != nil {
		return err
	}
	// Restarting the counter would hand out revisions existing entries
	// already have, and a stale compare-and-swap could then succeed.
	if k, _ := data.Cursor().First(); k != nil && meta.Get(revisionKey) == nil {
		return fmt.Errorf("%w: the revision counter is missing but the file holds data", errLayout)
	}
	return nil
}

// Path returns the storage file's path.
func (b *Backend) Path() string { return b.path }

// Get returns the entry at key, or storage.ErrNotFound.
func (b *Backend) Get(ctx context.Context, key string) (storage.Entry, error) {
	if err := ctx.Err(); err != nil {
		return storage.Entry{}, err
	}
	if key == "" {
		return storage.Entry{}, errors.New("bolt: empty key")
	}
	var e storage.Entry
	err := b.db.View(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(dataBucket).Get([]byte(key))
		if raw == nil {
			return storage.ErrNotFound
		}
		rev, value, err := decode(key, raw)
		if err != nil {
			return err
		}
		// raw points into the memory map, which is only valid during the
		// transaction; the caller gets its own copy.
		e = storage.Entry{Key: key, Value: append([]byte{}, value...), Revision: rev}
		return nil
	})
	if err != nil {
		return storage.Entry{}, b.wrap(err)
	}
	return e, nil
}

// List returns the keys that start with prefix, in lexical (byte) order.
func (b *Backend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var keys []string
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(dataBucket).Cursor()
		p := []byte(prefix)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			keys = append(keys, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap(err)
	}
	return keys, nil
}

// Apply writes ops atomically in one bbolt transaction and returns once it is
// fsynced. Every condition is checked against the state before the batch; if
// one fails, nothing is written and the error wraps storage.ErrConflict. All
// writes of a batch share one new revision. A batch that would change
// nothing (only checks, or deletes of missing keys) commits nothing.
func (b *Backend) Apply(ctx context.Context, ops ...storage.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, op := range ops {
		if err := validate(op); err != nil {
			return err
		}
	}
	if len(ops) == 0 {
		return nil
	}
	// Batch runs this function in a transaction shared with concurrent
	// Applies; if it fails, bbolt rolls back and reruns it alone, so its
	// error (a conflict) never affects another caller's writes.
	err := b.db.Batch(func(tx *bbolt.Tx) error {
		// Batch may have waited for other writers; don't start a batch
		// whose caller has given up.
		if err := ctx.Err(); err != nil {
			return err
		}
		data, meta := tx.Bucket(dataBucket), tx.Bucket(metaBucket)
		changed := false
		for _, op := range ops {
			raw := data.Get([]byte(op.Key))
			if op.IfRevision != storage.AnyRevision {
				var cur int64
				if raw != nil {
					var err error
					if cur, _, err = decode(op.Key, raw); err != nil {
						return err
					}
				}
				if cur != op.IfRevision {
					return fmt.Errorf("%w: key %q is at revision %d, batch requires %d",
						storage.ErrConflict, op.Key, cur, op.IfRevision)
				}
			}
			changed = changed || op.Kind == storage.OpPut || (op.Kind == storage.OpDelete && raw != nil)
		}
		if !changed {
			return errNoChange
		}
		last, err := lastRevision(meta)
		if err != nil {
			return err
		}
		rev := last + 1
		for _, op := range ops {
			switch op.Kind {
			case storage.OpPut:
				err = data.Put([]byte(op.Key), encode(rev, op.Value))
			case storage.OpDelete:
				err = data.Delete([]byte(op.Key))
			}
			if err != nil {
				return fmt.Errorf("key %q: %w", op.Key, err)
			}
		}
		return meta.Put(revisionKey, encodeUint(uint64(rev)))
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return b.wrap(err)
}

// Close closes the file and releases its lock. Every later call fails;
// closing again is a no-op.
func (b *Backend) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close storage file %s: %w", b.path, err)
	}
	return nil
}

// wrap adds the package name to errors that are not the storage sentinels or
// context errors callers test for.
func (b *Backend) wrap(err error) error {
	switch {
	case err == nil, errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrConflict),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, bbolt.ErrDatabaseNotOpen):
		return fmt.Errorf("bolt: storage file %s is closed: %w", b.path, err)
	}
	return fmt.Errorf("bolt: %s: %w", b.path, err)
}

func validate(op storage.Op) error {
	if err := op.Validate(); err != nil {
		return err
	}
	if len(op.Key) > bbolt.MaxKeySize {
		return fmt.Errorf("bolt: key of %d bytes is longer than the limit of %d", len(op.Key), bbolt.MaxKeySize)
	}
	return nil
}

// lastRevision reads the global revision counter; 0 on a new file.
func lastRevision(meta *bbolt.Bucket) (int64, error) {
	v := meta.Get(revisionKey)
	switch {
	case v == nil:
		return 0, nil
	case len(v) != 8 || int64(binary.BigEndian.Uint64(v)) < 0:
		return 0, fmt.Errorf("%w: malformed revision counter %x", errLayout, v)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// encode lays out a stored value: 8-byte big-endian revision, then the value.
// It always allocates, so bbolt never holds the caller's slice.
func encode(rev int64, value []byte) []byte {
	buf := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(buf, uint64(rev))
	copy(buf[8:], value)
	return buf
}

// decode splits a stored value. The value it returns aliases raw.
func decode(key string, raw []byte) (int64, []byte, error) {
	if len(raw) < 8 {
		return 0, nil, fmt.Errorf("%w: corrupt entry for key %q: %d bytes, shorter than its revision header", errLayout, key, len(raw))
	}
	rev := int64(binary.BigEndian.Uint64(raw))
	if rev <= 0 {
		return 0, nil, fmt.Errorf("%w: corrupt entry for key %q: revision %d", errLayout, key, rev)
	}
	return rev, raw[8:], nil
}

func encodeUint(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

// preflight reads the bbolt header of the file at path, if there is one, and
// fails when the file is shorter than the pages the header says it holds or
// when the freelist page is damaged. bbolt maps the file and trusts it: a
// truncated file (an interrupted copy, a full disk during a restore) would
// crash the process with SIGBUS, and a bad freelist makes bbolt.Open panic
// after it has mapped and locked the file, so that recovering would leak the
// lock. Whatever preflight cannot parse is left for bbolt to report.
func preflight(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() || info.Size() == 0 {
		return nil
	}
	size := info.Size()

	// bbolt keeps two meta pages, at page 0 and page 1, and uses the valid
	// one with the higher transaction id. The page size is recorded in the
	// meta page itself; when page 0 is damaged, look for page 1 at every
	// page size bbolt would try.
	m0, ok0 := readMeta(f, 0)
	offsets := []int64{int64(m0.pageSize)}
	if !ok0 {
		offsets = offsets[:0]
		for shift := range 15 {
			offsets = append(offsets, 1024<<shift)
		}
	}
	m, found := m0, ok0
	for _, off := range offsets {
		if off >= size {
			break
		}
		m1, ok1 := readMeta(f, off)
		if !ok1 || int64(m1.pageSize) != off {
			continue
		}
		if !found || m1.txid > m.txid {
			m, found = m1, true
		}
		break
	}
	if !found {
		return nil
	}
	pageSize := uint64(m.pageSize)
	if need := m.pgid * pageSize; m.pgid > uint64(size) || need > uint64(size) {
		return fmt.Errorf("file is truncated: %d bytes, its header says %d pages of %d bytes", size, m.pgid, pageSize)
	}
	if m.freelist == noFreelist {
		return nil
	}
	return checkFreelist(f, m)
}

// checkFreelist validates the freelist page the way bbolt.Open will read it.
func checkFreelist(f *os.File, m boltMeta) error {
	const freelistFlag = 0x10
	bad := func(format string, args ...any) error {
		return fmt.Errorf("damaged freelist page %d: "+format, append([]any{m.freelist}, args...)...)
	}
	if m.freelist < 2 || m.freelist >= m.pgid {
		return bad("outside the file's %d pages", m.pgid)
	}
	off := int64(m.freelist * uint64(m.pageSize))
	header := make([]byte, pageHeader+8)
	if _, err := f.ReadAt(header, off); err != nil {
		return bad("%v", err)
	}
	order := binary.NativeEndian
	id, flags, count, overflow := order.Uint64(header), order.Uint16(header[8:]), uint64(order.Uint16(header[10:])), uint64(order.Uint32(header[12:]))
	skip := uint64(0)
	if count == 0xFFFF {
		count, skip = order.Uint64(header[pageHeader:]), 1
	}
	switch {
	case id != m.freelist || flags != freelistFlag:
		return bad("page id %d, flags %#x", id, flags)
	case overflow >= m.pgid-m.freelist:
		return bad("%d overflow pages run past the file's %d pages", overflow, m.pgid)
	case count > m.pgid || pageHeader+(skip+count)*8 > (overflow+1)*uint64(m.pageSize):
		return bad("%d free page ids do not fit in the page", count)
	}
	raw := make([]byte, count*8)
	if _, err := f.ReadAt(raw, off+int64(pageHeader+skip*8)); err != nil {
		return bad("%v", err)
	}
	ids := make([]uint64, count)
	for i := range ids {
		ids[i] = order.Uint64(raw[i*8:])
	}
	slices.Sort(ids)
	for i, id := range ids {
		if id < 2 || id >= m.pgid || (i > 0 && id == ids[i-1]) {
			return bad("free page id %d is a meta page, a duplicate, or past the end", id)
		}
	}
	return nil
}

// pageHeader is the size of a bbolt page header: id, flags, count, overflow.
const pageHeader = 16

// noFreelist is the freelist page id of a file written without a freelist.
const noFreelist = ^uint64(0)

// boltMeta is the part of a bbolt meta page preflight needs.
type boltMeta struct {
	pageSize uint32
	freelist uint64 // page id of the freelist, or noFreelist
	pgid     uint64 // high-water mark: pages [0, pgid) are in use
	txid     uint64
}

// readMeta decodes the bbolt meta page at offset, reporting whether it is
// valid. The layout (bbolt's internal common.Meta after the page header, in
// native byte order, with an FNV-64a checksum over the fields before it) is
// bbolt's file format version 2, which has not changed since bbolt forked
// from boltdb.
func readMeta(f *os.File, offset int64) (boltMeta, bool) {
	const (
		magic       = 0xED0CDAED
		version     = 2
		checksumOff = 56 // magic, version, pageSize, flags, root(16), freelist, pgid, txid
	)
	buf := make([]byte, pageHeader+checksumOff+8)
	if _, err := f.ReadAt(buf, offset); err != nil {
		return boltMeta{}, false
	}
	m := buf[pageHeader:]
	order := binary.NativeEndian
	h := fnv.New64a()
	h.Write(m[:checksumOff])
	if order.Uint32(m[0:]) != magic || order.Uint32(m[4:]) != version || order.Uint64(m[checksumOff:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: order.Uint32(m[8:]),
		freelist: order.Uint64(m[32:]),
		pgid:     order.Uint64(m[40:]),
		txid:     order.Uint64(m[48:]),
	}, true
}
