package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of a Trail.
const (
	DefaultMaxFileSize        = 100 << 20
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 10 * time.Second
	maxBatch                  = 4096
	reserveSlack              = 64 << 10
	commitLinger              = 200 * time.Microsecond
	reserveChunk              = 1 << 20
	// outcomeAllowance is what an outcome record may take beyond its
	// intent record's size (status, latency, key version, a checkpoint).
	outcomeAllowance = 512
	// owedFor forgets a promise whose outcome never came (a crash of the
	// handler between its two records).
	owedFor = time.Minute
)

// errNoSpace marks a batch refused because the disk cannot hold it next
// to the space owed to admitted state changes.
var errNoSpace = errors.New("no space")

// errUnsyncedLost marks a failed fsync that took relaxed records with it:
// the trail went back to its last durable state (Options.BatchedSync).
var errUnsyncedLost = errors.New("records written since the last fsync are lost")

// genesis is the prev of the first record of an installation.
var genesis = strings.Repeat("0", 64)

// TypeStart is the type of a start record: the signed line a trail writes
// at the head of every file and whenever it opens an existing log (format
// 2; docs/formats.md). It names the first record of its file and the
// records the trail found unsigned when it opened the log.
const TypeStart = "start"

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit trail closed")

// Options configure a Trail.
type Options struct {
	// Dir holds the log files (audit-<replica>-<first seq>.jsonl, or
	// audit-<first seq>.jsonl without ReplicaID). Empty: no file; then
	// Stdout must be set and is the primary sink.
	Dir string
	// ReplicaID names the replica whose trail this is (ValidateReplicaID):
	// it is in every line (format 3) and in the file names, so replicas
	// can share Dir, each with its own chain. Empty: a trail of one
	// server, in format 2 and the names of logs written before replicas.
	ReplicaID string
	// Keys hash and sign; required.
	Keys *Keys
	// MaxFileSize rotates the active file when it would grow past it.
	MaxFileSize int64
	// CheckpointEvery signs a checkpoint after this many records.
	CheckpointEvery int
	// CheckpointInterval signs a checkpoint when records are pending this
	// long (bounds the unsigned tail of a live log).
	CheckpointInterval time.Duration
	// Stdout is a sink: the primary one when Dir is empty, else a
	// best-effort mirror.
	Stdout io.Writer
	// OnStdoutDrop, if set, counts the lines the stdout mirror dropped
	// because stdout did not keep up (file mode only).
	OnStdoutDrop func(lines int)
	// Mirrors receive committed lines; they must not block.
	Mirrors []Mirror
	// Observe, if set, is called with every batch's commit latency, its
	// size and its error (for metrics).
	Observe func(d time.Duration, n int, err error)
	// OpenFile opens log files; tests inject faults here. Default os.OpenFile.
	OpenFile func(name string, flag int, perm os.FileMode) (File, error)
	// Reserve allocates n bytes of f from off without changing its size;
	// tests simulate a full disk here. Default fallocate (a no-op where
	// the file system cannot).
	Reserve func(f File, off, n int64) error
	// BatchedSync, if positive, lets Record return for a record marked
	// Relaxed once its line is written to the file (the page cache), and
	// fsyncs such lines within BatchedSync: sooner with the next record
	// that is not relaxed, a checkpoint, a rotation or Close. A crash of
	// the machine (not of the process) may lose the relaxed records of
	// that window; the chain stays valid. Zero (the default): every
	// record is fsynced before Record returns. At most MaxBatchedSync.
	BatchedSync time.Duration
}

// MaxBatchedSync bounds Options.BatchedSync: what a machine crash may
// lose stays a short window.
const MaxBatchedSync = time.Second

// File is what the trail needs of a log file.
type File interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// Mirror is a best-effort sink: Send must not block; it may drop.
type Mirror interface {
	Send(line []byte)
}

type pending struct {
	rec  *Record
	body []byte
	buf  *[]byte // body's buffer, from bodyPool; nil if not pooled
	done chan error
}

// chainState is where the chain and the active file stood after a
// commit: the trail goes back to the last durable one when an fsync of
// relaxed records fails.
type chainState struct {
	seq, fileStart     uint64
	prev               string
	sinceCk            int
	firstTime          time.Time
	needStart          bool
	startFrom, startTo uint64
	size               int64
}

// bodyPool holds the buffers records are encoded into; the writer returns
// a record's buffer once the record is copied into its batch.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Trail is the production Recorder: chained, signed, group-committed.
type Trail struct {
	opt Options
	in  chan *pending

	// Owned by the writer goroutine.
	f         File
	name      string
	size      int64
	reserved  int64 // file offset up to which blocks are reserved
	seq       uint64
	prev      string
	sinceCk   int
	fileStart uint64 // seq of the first line of the active file
	// legacy: this replica continues the chain of the log without
	// replica id in Dir (it claimed it; replica.go).
	legacy bool
	// needStart asks for a start record before the next line; startFrom
	// and startTo are the unverified records it declares (0 0: none).
	needStart          bool
	startFrom, startTo uint64
	firstTime          time.Time // of the oldest record not covered by a checkpoint
	broken             error
	buf                bytes.Buffer
	// Space owed to the outcome records of admitted intents: other
	// records may not use it, and it moves to the next file on rotation.
	owed      int64
	owedBy    map[string]owedEntry // by request id
	releasing int64                // owed space the batch being written may use

	hmac     *hmacPool
	stop     chan struct{}
	stopped  chan struct{}
	closeMu  sync.Mutex
	closed   bool
	donePool sync.Pool
	stdout   *lineQueue // the stdout mirror next to a file sink

	// With Options.BatchedSync, owned by the writer: relaxed lines
	// written since the last fsync (dirty), when they must be synced by,
	// the state after the last fsync, and whether the batch being
	// committed may skip its fsync.
	dirty   bool
	syncBy  time.Time
	durable chainState
	noSync  bool
	// held: relaxed lines not yet fsynced, kept from the mirrors until
	// they are durable, so a mirror never shows a line that a failed
	// fsync then cut (whose seq the chain would give to another line).
	held []byte

	// tornFile and tornBytes: what Open cut off a torn tail (TornTail).
	tornFile  string
	tornBytes int64
}

// TornTail reports the file and the bytes Open cut off the end of the log
// because a crash had left them torn (zeroed blocks of writes that were
// never fsynced); bytes is 0 when it cut nothing. The server logs it.
func (t *Trail) TornTail() (file string, bytes int64) { return t.tornFile, t.tornBytes }

// owedEntry is space promised to one request's outcome record.
type owedEntry struct {
	bytes int64
	at    time.Time
}

// Open starts a trail, continuing the chain of the newest file in Dir.
//
// Before it continues a log, Open checks its end: the last signed line
// (checkpoint or start record) must verify with opt.Keys and every record
// after it must chain to it. If they do not, Open fails: the trail would
// otherwise sign over records it cannot vouch for. Records that chain but
// follow the last signed line (a crash's unsigned tail, or records added
// while no server ran) are declared "inherited unverified" in the start
// record Open writes before any new record.
func Open(opt Options) (*Trail, error) {
	if opt.Keys == nil {
		return nil, errors.New("audit: no keys")
	}
	if opt.Dir == "" && opt.Stdout == nil {
		return nil, errors.New("audit: no sink: set a directory or stdout")
	}
	if opt.ReplicaID != "" {
		if err := ValidateReplicaID(opt.ReplicaID); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
	}
	if opt.BatchedSync < 0 || opt.BatchedSync > MaxBatchedSync {
		return nil, fmt.Errorf("audit: batched sync window %v: want between 0 (every record fsynced) and %v", opt.BatchedSync, MaxBatchedSync)
	}
	if opt.MaxFileSize <= 0 {
		opt.MaxFileSize = DefaultMaxFileSize
	}
	if opt.CheckpointEvery <= 0 {
		opt.CheckpointEvery = DefaultCheckpointEvery
	}
	if opt.CheckpointInterval <= 0 {
		opt.CheckpointInterval = DefaultCheckpointInterval
	}
	if opt.OpenFile == nil {
		opt.OpenFile = func(name string, flag int, perm os.FileMode) (File, error) { return os.OpenFile(name, flag, perm) }
	}
	if opt.Reserve == nil {
		opt.Reserve = reserve
	}
	t := &Trail{opt: opt, in: make(chan *pending, maxBatch), seq: 0, prev: genesis, hmac: newHMACPool(opt.Keys),
		stop: make(chan struct{}), stopped: make(chan struct{}), owedBy: map[string]owedEntry{}}
	t.donePool.New = func() any { return make(chan error, 1) }
	if opt.Dir != "" {
		if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
			return nil, err
		}
		if err := t.findLegacy(); err != nil {
			return nil, err
		}
		if err := t.recover(); err != nil {
			return nil, err
		}
		from, to, err := t.checkTail()
		if err != nil {
			t.f.Close()
			return nil, err
		}
		t.startFrom, t.startTo = from, to
	} else {
		t.fileStart = 1
	}
	if opt.Dir != "" && opt.Stdout != nil {
		t.stdout = newLineQueue(opt.Stdout, opt.OnStdoutDrop)
	}
	t.needStart = true
	t.markDurable()
	t.writeStart()
	go t.run()
	return t, nil
}

// writeStart writes the pending start record now. If it cannot (a full
// disk), the next commit writes it before its records.
func (t *Trail) writeStart() {
	seq0, prev0, since0 := t.seq, t.prev, t.sinceCk
	t.buf.Reset()
	t.appendStart()
	if err := t.write(t.buf.Bytes(), false); err != nil {
		if !errors.Is(err, errUnsyncedLost) {
			t.seq, t.prev, t.sinceCk, t.needStart = seq0, prev0, since0, true
		}
		return
	}
	t.mirror(t.buf.Bytes())
}

// findLegacy decides whether this replica continues the log without
// replica id in its directory: it does when it claimed that log, which it
// tries when it has no files of its own yet.
func (t *Trail) findLegacy() error {
	if t.opt.ReplicaID == "" {
		return nil
	}
	legacy, err := ReplicaFiles(t.opt.Dir, "")
	if err != nil || len(legacy) == 0 {
		return err
	}
	own, err := ReplicaFiles(t.opt.Dir, t.opt.ReplicaID)
	if err != nil {
		return err
	}
	if len(own) == 0 {
		t.legacy, err = claimLegacy(t.opt.Dir, t.opt.ReplicaID)
		return err
	}
	b, err := os.ReadFile(filepath.Join(t.opt.Dir, legacyClaim))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	t.legacy = strings.TrimSpace(string(b)) == t.opt.ReplicaID
	return nil
}

// chainFiles lists the files of this trail's chain in order: its own,
// after those of the log without replica id it continues, if any.
func (t *Trail) chainFiles() ([]string, error) {
	own, err := ReplicaFiles(t.opt.Dir, t.opt.ReplicaID)
	if err != nil || !t.legacy {
		return own, err
	}
	legacy, err := ReplicaFiles(t.opt.Dir, "")
	return append(legacy, own...), err
}

// recover opens the newest file and restores seq and prev from its last
// complete line. A torn last line (a write that was never acknowledged) is
// cut off.
func (t *Trail) recover() error {
	// On a live trail the acknowledged end of the active file is known:
	// anything past it was refused (a failed write whose cut-back failed
	// too) and is cut off, not continued from.
	ackName, ackSize := t.name, t.size
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	files, err := t.chainFiles()
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return t.openNew(1)
	}
	name := files[len(files)-1]
	if ackName == "" {
		// Opening the log (not recovering a live trail, whose
		// acknowledged end is known): a crash may have left zeroed
		// blocks at its end.
		cut, err := cutTornTail(name)
		if err != nil {
			return err
		}
		if cut > 0 {
			t.tornFile, t.tornBytes = name, cut
		}
	}
	seq, prev, size, err := lastLine(name)
	if err != nil {
		return err
	}
	if name == ackName && size > ackSize {
		seq, size = 0, ackSize // keep the chain state in memory
	}
	f, err := t.opt.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if st, err := f.Stat(); err == nil && st.Size() != size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
	}
	if seq == 0 && size == 0 && len(files) > 1 {
		// An empty newest file: continue from the one before it.
		seq, prev, _, err = lastLine(files[len(files)-2])
		if err != nil {
			f.Close()
			return err
		}
	}
	if r, _, _ := parseFileName(name); r != t.opt.ReplicaID {
		// The newest file is the log without replica id this replica
		// continues: the chain goes on in a file of its own.
		f.Close()
		if seq > 0 {
			t.seq, t.prev = seq, prev
		}
		return t.openNew(t.seq + 1)
	}
	t.f, t.name, t.size, t.reserved = f, name, size, 0
	if seq > 0 {
		t.seq, t.prev = seq, prev
	}
	t.fileStart = t.seq + 1 // an empty file: the next line is its first
	if size > 0 {
		if t.fileStart, err = firstSeq(name); err != nil {
			f.Close()
			t.f = nil
			return err
		}
	}
	return nil
}

// firstSeq returns the sequence number of the first line of a file.
func firstSeq(name string) (uint64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var seq uint64
	err = eachLine(f, func(line []byte) error {
		seq, _, err = parseHead(line)
		if err != nil {
			return fmt.Errorf("%s: first line: %w", name, err)
		}
		return errStop
	})
	return seq, err
}

// lastLine returns the sequence number and hash of the last complete line
// of a file and the size up to and including it.
func lastLine(name string) (seq uint64, hash string, size int64, err error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, "", 0, err
	}
	end := st.Size()
	const chunk = 64 << 10
	var tail []byte
	for off := end; ; {
		start := max(off-chunk, 0)
		b := make([]byte, off-start)
		if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
			return 0, "", 0, err
		}
		tail = append(b, tail...)
		// Need the last '\n' and the one before it (or the file start).
		last := bytes.LastIndexByte(tail, '\n')
		if last >= 0 {
			before := bytes.LastIndexByte(tail[:last], '\n')
			if before >= 0 || start == 0 {
				line := tail[before+1 : last]
				h := sha256.Sum256(line)
				s, _, perr := parseHead(line)
				if perr != nil {
					return 0, "", 0, fmt.Errorf("%s: last line: %w", name, perr)
				}
				return s, hex.EncodeToString(h[:]), start + int64(last) + 1, nil
			}
		} else if start == 0 {
			return 0, "", 0, nil // no complete line
		}
		if start == 0 {
			return 0, "", 0, nil
		}
		off = start
	}
}

func (t *Trail) openNew(firstSeq uint64) error {
	name := fileName(t.opt.Dir, t.opt.ReplicaID, firstSeq)
	f, err := t.opt.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	syncDir(t.opt.Dir) // make the new name durable
	t.f, t.name, t.size, t.reserved = f, name, 0, 0
	t.fileStart = firstSeq
	return nil
}

// Record implements Recorder: it returns once the record is fsynced.
func (t *Trail) Record(ctx context.Context, r *Record) error {
	if r.Type == "" {
		r.Type = TypeRequest
	}
	r.Replica = t.opt.ReplicaID
	t.hashSensitive(r)
	buf := bodyPool.Get().(*[]byte)
	body, ok := appendRecord((*buf)[:0], r)
	if !ok {
		// A time RFC 3339 cannot express: encoding/json says why.
		bodyPool.Put(buf)
		if _, err := json.Marshal(r); err != nil {
			return err
		}
		return errors.New("audit: record cannot be encoded")
	}
	if err := ctx.Err(); err != nil {
		// Refused every time, not only when select below picks Done.
		bodyPool.Put(buf)
		return err
	}
	done := t.donePool.Get().(chan error)
	p := &pending{rec: r, body: body, buf: buf, done: done}
	t.closeMu.Lock()
	if t.closed {
		t.closeMu.Unlock()
		t.donePool.Put(done)
		return ErrClosed
	}
	select {
	case t.in <- p:
	case <-ctx.Done():
		t.closeMu.Unlock()
		t.donePool.Put(done)
		return ctx.Err()
	}
	t.closeMu.Unlock()
	// Wait for the commit even if ctx ends: the writer owns p until then.
	err := <-done
	t.donePool.Put(done)
	return err
}

// recycleBody returns p's encoding buffer to the pool once it is copied.
func (p *pending) recycleBody() {
	if p.buf != nil && cap(p.body) <= 64<<10 {
		*p.buf = p.body[:0]
		bodyPool.Put(p.buf)
	}
	p.buf, p.body = nil, nil
}

// hashSensitive replaces the token and context values by their HMACs.
func (t *Trail) hashSensitive(r *Record) {
	if r.Token != "" {
		r.TokenHMAC = t.hmac.sum(r.Token)
		r.Token = ""
	}
	if len(r.ContextValues) > 0 {
		r.Context = make(map[string]string, len(r.ContextValues))
		for k, v := range r.ContextValues {
			r.Context[k] = t.hmac.sum(v)
		}
		r.ContextValues = nil
	}
	r.hashItems(t.hmac.sum) // batch items' contexts (audit.go)
}

// Close writes a final checkpoint and stops the writer.
func (t *Trail) Close() error {
	t.closeMu.Lock()
	if t.closed {
		t.closeMu.Unlock()
		return nil
	}
	t.closed = true
	t.closeMu.Unlock()
	close(t.stop)
	<-t.stopped
	if t.stdout != nil {
		t.stdout.close(2 * time.Second)
	}
	return nil
}

func (t *Trail) run() {
	defer close(t.stopped)
	tick := time.NewTicker(t.opt.CheckpointInterval / 2)
	defer tick.Stop()
	batch := make([]*pending, 0, maxBatch)
	// With BatchedSync, the deadline of relaxed lines not yet fsynced.
	// armed: it runs. A window whose fsync found no file (reopening it
	// failed) leaves the lines dirty; the next batch arms it again.
	syncTimer := time.NewTimer(time.Hour)
	syncTimer.Stop()
	defer syncTimer.Stop()
	armed := false
	for {
		select {
		case <-syncTimer.C:
			armed = false
			t.syncDirty()
		case p := <-t.in:
			batch = append(batch[:0], p)
		drain:
			for len(batch) < maxBatch {
				select {
				case p := <-t.in:
					batch = append(batch, p)
				default:
					break drain
				}
			}
			// Linger briefly for more records: fewer fsyncs under load, at
			// the cost of at most commitLinger of latency. (Measured against
			// no linger and against overlapping fsyncs: docs/audit.md.)
			if len(batch) > 1 && len(batch) < maxBatch {
				timer := time.NewTimer(commitLinger)
			linger:
				for len(batch) < maxBatch {
					select {
					case p := <-t.in:
						batch = append(batch, p)
					case <-timer.C:
						break linger
					}
				}
				timer.Stop()
			}
			batch = t.admitIntents(batch)
			t.noSync = t.relaxed(batch)
			batch, err := t.commitOwing(batch)
			t.noSync = false
			if t.dirty && !armed {
				syncTimer.Reset(t.opt.BatchedSync)
				armed = true
			}
			for _, p := range batch {
				p.done <- err
			}
		case <-tick.C:
			if t.sinceCk > 0 && time.Since(t.firstTime) >= t.opt.CheckpointInterval {
				t.commit(nil, true)
			}
		case <-t.stop:
			// Drain what was queued, then sign the tail.
			for {
				select {
				case p := <-t.in:
					b, err := t.commitOwing([]*pending{p})
					for _, p := range b {
						p.done <- err
					}
					continue
				default:
				}
				break
			}
			if t.sinceCk > 0 || t.needStart {
				t.commit(nil, true)
			}
			// Relaxed lines a checkpoint already signed (sinceCk 0) had no
			// fsync from the commit above.
			t.syncDirty()
			if t.f != nil {
				t.f.Close()
			}
			return
		}
	}
}

// relaxed reports whether batch may be acknowledged before it is
// fsynced: BatchedSync is on, the sink is a file and every record is
// marked Relaxed (an intent never is, nor the outcome of an admitted
// intent: a change waits for its records).
func (t *Trail) relaxed(batch []*pending) bool {
	if t.opt.BatchedSync <= 0 || t.opt.Dir == "" || len(batch) == 0 {
		return false
	}
	if len(t.held) >= maxHeld {
		return false // fsync now rather than hold more for the mirrors
	}
	for _, p := range batch {
		if !p.rec.Relaxed || p.rec.Phase == PhaseIntent || t.owes(p) {
			return false
		}
	}
	return true
}

// maxHeld bounds the relaxed lines held from the mirrors until their
// fsync: past it, the next batch is fsynced before it is acknowledged.
const maxHeld = 1 << 20

// syncDirty fsyncs the relaxed lines written since the last fsync.
func (t *Trail) syncDirty() {
	if !t.dirty || t.f == nil {
		return
	}
	start := time.Now()
	err := t.f.Sync()
	if err == nil {
		t.markDurable()
	} else {
		err = t.loseUnsynced(err)
	}
	if t.opt.Observe != nil {
		t.opt.Observe(time.Since(start), 0, err)
	}
}

// markDurable notes that everything written so far is on disk, and
// sends the mirrors the relaxed lines that waited for it.
func (t *Trail) markDurable() {
	t.dirty = false
	if len(t.held) > 0 {
		t.mirror(t.held)
		t.held = t.held[:0]
	}
	t.durable = chainState{seq: t.seq, fileStart: t.fileStart, prev: t.prev, sinceCk: t.sinceCk, firstTime: t.firstTime,
		needStart: t.needStart, startFrom: t.startFrom, startTo: t.startTo, size: t.size}
}

// loseUnsynced handles an fsync that failed with relaxed lines written
// since the last good one. After a failed fsync the kernel may have
// dropped those pages, so they are cut off and the chain goes on from the
// last durable line; the sink is reopened with the next batch. Those
// records were acknowledged: this is the loss BatchedSync accepts.
func (t *Trail) loseUnsynced(cause error) error {
	d := t.durable
	err := fmt.Errorf("audit file %s: %w: %w", t.name, errUnsyncedLost, cause)
	if terr := t.f.Truncate(d.size); terr != nil {
		err = errors.Join(err, terr)
	}
	t.seq, t.fileStart, t.prev, t.sinceCk, t.firstTime = d.seq, d.fileStart, d.prev, d.sinceCk, d.firstTime
	t.needStart, t.startFrom, t.startTo, t.size = d.needStart, d.startFrom, d.startTo, d.size
	t.dirty = false
	t.held = t.held[:0] // the mirrors never saw the lines cut
	t.broken = err
	return err
}

// admitIntents fails the intent records of a batch unless space for their
// outcome records is reserved: a state change is let through only if its
// outcome can be recorded too. Other records go on.
func (t *Trail) admitIntents(batch []*pending) []*pending {
	if t.opt.Dir == "" || t.f == nil {
		return batch
	}
	var need, promise int64
	for _, p := range batch {
		need += int64(len(p.body)) + 100
		if p.rec.Phase == PhaseIntent {
			promise += int64(len(p.body)) + outcomeAllowance
		}
	}
	if promise == 0 {
		return batch
	}
	t.forgetStaleOwed()
	end := t.size + need + t.owed + promise + reserveSlack
	err := t.reserveTo(end)
	if err == nil {
		now := time.Now()
		for _, p := range batch {
			if p.rec.Phase == PhaseIntent && p.rec.RequestID != "" {
				n := int64(len(p.body)) + outcomeAllowance
				e := t.owedBy[p.rec.RequestID]
				e.bytes += n
				e.at = now
				t.owedBy[p.rec.RequestID] = e
				t.owed += n
			}
		}
		return batch
	}
	err = fmt.Errorf("audit file %s: no space for the outcome record of a state change: %w", t.name, err)
	if t.opt.Observe != nil {
		t.opt.Observe(0, 0, err)
	}
	kept := batch[:0]
	for _, p := range batch {
		if p.rec.Phase == PhaseIntent {
			p.recycleBody()
			p.done <- err
		} else {
			kept = append(kept, p)
		}
	}
	return kept
}

// reserveTo makes sure blocks up to offset end of the active file are
// reserved, taking a chunk more when it can.
func (t *Trail) reserveTo(end int64) error {
	if end <= t.reserved {
		return nil
	}
	if err := t.opt.Reserve(t.f, t.size, end-t.size+reserveChunk); err == nil {
		t.reserved = end + reserveChunk
		return nil
	}
	if err := t.opt.Reserve(t.f, t.size, end-t.size); err != nil {
		return err
	}
	t.reserved = end
	return nil
}

// owes reports whether p is the outcome of an admitted intent.
func (t *Trail) owes(p *pending) bool {
	if p.rec.Phase == PhaseIntent || p.rec.RequestID == "" {
		return false
	}
	_, ok := t.owedBy[p.rec.RequestID]
	return ok
}

// forgetStaleOwed drops promises older than owedFor.
func (t *Trail) forgetStaleOwed() {
	cutoff := time.Now().Add(-owedFor)
	for id, e := range t.owedBy {
		if e.at.Before(cutoff) {
			t.owed -= e.bytes
			delete(t.owedBy, id)
		}
	}
}

// settleOwed updates the promises after records were committed (err nil)
// or refused: an outcome pays its intent's promise either way (it is not
// sent again), and a refused intent will have no outcome.
func (t *Trail) settleOwed(batch []*pending, err error) {
	for _, p := range batch {
		if p.rec.RequestID == "" || p.rec.Phase == PhaseIntent && err == nil {
			continue
		}
		if e, ok := t.owedBy[p.rec.RequestID]; ok {
			t.owed -= e.bytes
			delete(t.owedBy, p.rec.RequestID)
		}
	}
}

// commitOwing commits a batch. When the disk has no room for it next to
// the space owed to admitted state changes, the outcomes of those changes
// still go in (into the space kept for them) and the other records are
// refused here. It returns the records that share the returned error.
func (t *Trail) commitOwing(batch []*pending) ([]*pending, error) {
	t.releasing = 0
	for _, p := range batch {
		if t.owes(p) {
			t.releasing += t.owedBy[p.rec.RequestID].bytes
		}
	}
	err := t.commit(batch, false)
	if errors.Is(err, errNoSpace) && t.releasing > 0 {
		var owing, refused []*pending
		for _, p := range batch {
			if t.owes(p) {
				owing = append(owing, p)
			} else {
				refused = append(refused, p)
			}
		}
		t.settleOwed(refused, err)
		for _, p := range refused {
			p.recycleBody()
			p.done <- err
		}
		batch = owing
		err = t.commit(batch, false)
	}
	t.releasing = 0
	t.settleOwed(batch, err)
	for _, p := range batch {
		p.recycleBody() // kept until here: a refused batch may be written again
	}
	return batch, err
}

// appendLine adds one chained line for body (a JSON object) to t.buf.
func (t *Trail) appendLine(body []byte) (uint64, string) {
	t.seq++
	start := t.buf.Len()
	t.buf.WriteString(`{"seq":`)
	t.buf.WriteString(strconv.FormatUint(t.seq, 10))
	t.buf.WriteString(`,"prev":"`)
	t.buf.WriteString(t.prev)
	t.buf.WriteString(`",`)
	t.buf.Write(body[1:])
	h := sha256.Sum256(t.buf.Bytes()[start:])
	t.buf.WriteByte('\n')
	prev := t.prev
	t.prev = hex.EncodeToString(h[:])
	return t.seq, prev
}

// appendCheckpoint adds a signed checkpoint line to t.buf: format 3 (it
// names and signs the replica) when the trail has a replica id, else 2.
func (t *Trail) appendCheckpoint() {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	seq := t.seq + 1
	var body []byte
	if r := t.opt.ReplicaID; r != "" {
		sig := ed25519.Sign(t.opt.Keys.priv, checkpointMessageV3(r, seq, t.prev, now, t.fileStart))
		body = fmt.Appendf(nil, `{"type":"checkpoint","replica":%q,"time":%q,"v":3,"file_start":%d,"key":%q,"sig":%q}`,
			r, now, t.fileStart, t.opt.Keys.PublicKeyString(), base64.StdEncoding.EncodeToString(sig))
	} else {
		sig := ed25519.Sign(t.opt.Keys.priv, checkpointMessageV2(seq, t.prev, now, t.fileStart))
		body = fmt.Appendf(nil, `{"type":"checkpoint","time":%q,"v":2,"file_start":%d,"key":%q,"sig":%q}`,
			now, t.fileStart, t.opt.Keys.PublicKeyString(), base64.StdEncoding.EncodeToString(sig))
	}
	t.appendLine(body)
	t.sinceCk = 0
}

// appendStart adds the pending start record to t.buf.
func (t *Trail) appendStart() {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	seq := t.seq + 1
	var body []byte
	if r := t.opt.ReplicaID; r != "" {
		sig := ed25519.Sign(t.opt.Keys.priv, startMessageV3(r, seq, t.prev, now, t.fileStart, t.startFrom, t.startTo))
		body = fmt.Appendf(nil, `{"type":"start","replica":%q,"time":%q,"v":3,"file_start":%d`, r, now, t.fileStart)
		t.appendStartRest(body, sig)
		return
	}
	sig := ed25519.Sign(t.opt.Keys.priv, startMessage(seq, t.prev, now, t.fileStart, t.startFrom, t.startTo))
	body = fmt.Appendf(body, `{"type":"start","time":%q,"v":2,"file_start":%d`, now, t.fileStart)
	t.appendStartRest(body, sig)
}

// appendStartRest ends a start record's body and appends it.
func (t *Trail) appendStartRest(body, sig []byte) {
	if t.startFrom > 0 {
		body = fmt.Appendf(body, `,"unverified_from":%d,"unverified_to":%d`, t.startFrom, t.startTo)
	}
	body = fmt.Appendf(body, `,"key":%q,"sig":%q}`, t.opt.Keys.PublicKeyString(), base64.StdEncoding.EncodeToString(sig))
	t.appendLine(body)
	t.sinceCk = 0
	t.needStart = false
}

// commit writes a batch (and any checkpoint due) with one write and one
// fsync. On failure the file is cut back and the chain state restored, so
// the log stays a valid chain; the sink is reopened on the next batch.
func (t *Trail) commit(batch []*pending, checkpointOnly bool) (err error) {
	start := time.Now()
	defer func() {
		if t.opt.Observe != nil {
			t.opt.Observe(time.Since(start), len(batch), err)
		}
	}()
	if t.broken != nil && t.opt.Dir != "" {
		// Relaxed lines written before the failure are fsynced (or cut)
		// in the file they are in before it is reopened, so the durable
		// state is the reopened file's.
		t.syncDirty()
		if rerr := t.recover(); rerr != nil {
			return fmt.Errorf("audit sink unavailable: %w", rerr)
		}
		t.broken = nil
		t.syncDirty() // lines left when an earlier reopen failed
		if t.broken != nil {
			return fmt.Errorf("audit sink unavailable: %w", t.broken)
		}
		t.markDurable()
	}
	if t.opt.Dir != "" && t.size >= t.opt.MaxFileSize && !checkpointOnly {
		if err := t.rotate(); err != nil {
			if t.broken != nil {
				return err
			}
			// The next file cannot be had (a full disk): go on in this
			// one, whose reserved space holds what is owed; try again
			// with the next batch.
			if t.opt.Observe != nil {
				t.opt.Observe(0, 0, err)
			}
		}
	}
	seq0, prev0, since0, first0, need0 := t.seq, t.prev, t.sinceCk, t.firstTime, t.needStart
	t.buf.Reset()
	if t.needStart {
		t.appendStart()
	}
	for _, p := range batch {
		if t.sinceCk == 0 {
			t.firstTime = time.Now()
		}
		p.rec.Seq, p.rec.Prev = t.appendLine(p.body)
		t.sinceCk++
		if t.sinceCk >= t.opt.CheckpointEvery {
			t.appendCheckpoint()
		}
	}
	if checkpointOnly && t.sinceCk > 0 {
		t.appendCheckpoint()
	}
	if t.buf.Len() == 0 {
		return nil
	}
	relaxed := t.noSync && !checkpointOnly
	if err := t.write(t.buf.Bytes(), relaxed); err != nil {
		if !errors.Is(err, errUnsyncedLost) {
			t.seq, t.prev, t.sinceCk, t.firstTime, t.needStart = seq0, prev0, since0, first0, need0
		}
		for _, p := range batch {
			p.rec.Seq, p.rec.Prev = 0, ""
		}
		return err
	}
	if relaxed {
		t.held = append(t.held, t.buf.Bytes()...)
	} else {
		t.mirror(t.buf.Bytes())
	}
	return nil
}

// write appends b durably to the primary sink, or, with relaxed, only
// to the file's page cache: then the lines are fsynced later (syncDirty).
// A failed fsync after relaxed lines goes back to the last durable state
// (loseUnsynced) and returns errUnsyncedLost.
func (t *Trail) write(b []byte, relaxed bool) error {
	if t.opt.Dir == "" {
		_, err := t.opt.Stdout.Write(b)
		return err
	}
	// The write must fit in reserved blocks and leave what is owed to
	// admitted state changes: a full disk then fails here, before
	// anything is written.
	if err := t.reserveTo(t.size + int64(len(b)) + t.owed - t.releasing); err != nil {
		return fmt.Errorf("audit file %s: reserving space: %w: %w", t.name, errNoSpace, err)
	}
	_, err := t.f.Write(b)
	if err == nil && relaxed {
		t.size += int64(len(b))
		t.dirty = true
		return nil
	}
	if err == nil {
		if err = t.f.Sync(); err != nil && t.dirty {
			return t.loseUnsynced(err)
		}
	}
	if err != nil {
		// Cut back what may have reached the file; reopen next time.
		if terr := t.f.Truncate(t.size); terr != nil {
			err = errors.Join(err, terr)
		}
		t.broken = err
		return fmt.Errorf("audit file %s: %w", t.name, err)
	}
	t.size += int64(len(b))
	t.markDurable()
	return nil
}

func (t *Trail) mirror(b []byte) {
	if t.stdout != nil {
		t.stdout.send(b)
	}
	if len(t.opt.Mirrors) == 0 {
		return
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := bytes.Clone(b[:i])
		for _, m := range t.opt.Mirrors {
			m.Send(line)
		}
		b = b[i+1:]
	}
}

// rotate ends the active file with a checkpoint and starts the next one.
// The next file is opened, and the space owed to admitted state changes
// reserved in it, before the checkpoint is written: if either fails, the
// active file stays as it was and the error says why.
func (t *Trail) rotate() error {
	ck := t.sinceCk > 0 || t.size > 0
	first := t.seq + 1
	if ck {
		first++ // the checkpoint takes t.seq+1
	}
	name := fileName(t.opt.Dir, t.opt.ReplicaID, first)
	f, err := t.opt.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	var reserved int64
	if t.owed > 0 {
		reserved = t.owed + reserveSlack
		if err := t.opt.Reserve(f, 0, reserved); err != nil {
			f.Close()
			os.Remove(name)
			return fmt.Errorf("audit file %s: reserving the space owed to state changes: %w", name, err)
		}
	}
	if ck {
		t.buf.Reset()
		seq0, prev0, since0 := t.seq, t.prev, t.sinceCk
		t.appendCheckpoint()
		if err := t.write(t.buf.Bytes(), false); err != nil {
			if !errors.Is(err, errUnsyncedLost) {
				t.seq, t.prev, t.sinceCk = seq0, prev0, since0
			}
			f.Close()
			os.Remove(name)
			return err
		}
		t.mirror(t.buf.Bytes())
	}
	syncDir(t.opt.Dir) // make the new name durable
	t.f.Close()
	t.f, t.name, t.size, t.reserved = f, name, 0, reserved
	t.fileStart, t.needStart, t.startFrom, t.startTo = first, true, 0, 0
	t.markDurable() // the checkpoint's fsync covered the old file
	return nil
}
