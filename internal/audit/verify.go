package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Kinds of verification problems.
const (
	ProblemMissing   = "missing"   // a sequence number is absent
	ProblemReordered = "reordered" // a record appears out of order or twice
	ProblemAltered   = "altered"   // a record's bytes changed
	ProblemTruncated = "truncated" // records cut from the head or the end of the log, or a file ends inside a record
	ProblemMalformed = "malformed" // a line is not a record
	ProblemSignature = "signature" // a checkpoint's signature or key is wrong
	// ProblemForeign: a record or file of another replica's trail (or of
	// none) in this replica's: moved between trails.
	ProblemForeign = "foreign"
)

// Problem is the first fault Verify finds.
type Problem struct {
	// Replica names the trail the problem is in (VerifyTrails).
	Replica string `json:"replica,omitempty"`
	Kind    string `json:"kind"`
	// Seq is the sequence number of the first record missing, altered,
	// reordered or truncated.
	Seq     uint64 `json:"seq"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func (p *Problem) Error() string {
	if p.Replica != "" {
		return fmt.Sprintf("replica %s: %s:%d: record seq %d: %s: %s", p.Replica, p.File, p.Line, p.Seq, p.Kind, p.Message)
	}
	return fmt.Sprintf("%s:%d: record seq %d: %s: %s", p.File, p.Line, p.Seq, p.Kind, p.Message)
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// PublicKey checks checkpoint signatures; nil trusts the key of the
	// first checkpoint (integrity only, not origin).
	PublicKey ed25519.PublicKey
	// AllowOpenTail accepts records after the last checkpoint (a live log);
	// otherwise an unsigned tail is reported as truncation.
	AllowOpenTail bool
	// FirstSeq is the sequence number the log must start at: 0 or 1 for a
	// complete log (the first record of the installation), the first
	// sequence number of the oldest file kept after older files were
	// removed on purpose (retention). A log starting later is reported as
	// truncated at its head.
	FirstSeq uint64
	// Replica is the replica whose trail the files hold; empty: the one
	// the first file's name, or the first record naming one, names. Every
	// record of format 3 must name it, and files named for a replica must
	// be its.
	Replica string
}

// SeqRange is a range of records a start record declared unverified: the
// trail that wrote the start record found them after the last signed line
// when it opened the log (a crash's unsigned tail, or records appended
// while no server was running) and could not vouch for them.
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// At is the sequence number of the start record that declared them.
	At uint64 `json:"at"`
}

// VerifyResult summarizes a verification.
type VerifyResult struct {
	Files       int    `json:"files"`
	Records     uint64 `json:"records"`
	Checkpoints uint64 `json:"checkpoints"`
	// Starts counts start records: one at the head of every file and one
	// each time a trail reopened the log (format 2).
	Starts         uint64 `json:"starts"`
	FirstSeq       uint64 `json:"first_seq"`
	LastSeq        uint64 `json:"last_seq"`
	LastCheckpoint uint64 `json:"last_checkpoint"`
	UnsignedTail   uint64 `json:"unsigned_tail"`
	// Format is the newest line format seen: 1 (checkpoints only), 2
	// (start records, checkpoints committing to the head of their file)
	// or 3 (every line names its replica, signatures cover it).
	Format int `json:"format"`
	// Replica is the replica whose trail this is ("" before format 3).
	Replica string `json:"replica,omitempty"`
	// Unverified lists the records that start records declared inherited
	// unverified: chained and later signed over, but not attested by the
	// trail that wrote them.
	Unverified []SeqRange `json:"unverified,omitempty"`
	PublicKey  string     `json:"public_key,omitempty"`
	Problem    *Problem   `json:"problem,omitempty"`
}

// Verify checks the chain, the sequence and the checkpoint signatures of
// files, in order, as one stream. It stops at the first problem, which it
// returns in the result; the error is for I/O failures only.
//
// Beyond the chain it checks the head of the log: the first record must
// be opt.FirstSeq (1 by default), and in format 2 every file must begin
// with its signed start record and every signed line names the first
// sequence number of its file, so records removed from the head of a file
// are reported even when the file is the first one given.
func Verify(files []string, opt VerifyOptions) (VerifyResult, error) {
	v := verifier{opt: opt}
	if opt.Replica != "" {
		v.replica = []byte(opt.Replica)
	}
	if v.opt.FirstSeq == 0 {
		v.opt.FirstSeq = 1
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return v.res, err
		}
		v.res.Files++
		err = v.file(name, f)
		f.Close()
		if err != nil || v.res.Problem != nil {
			return v.res, err
		}
	}
	if v.res.Records > 0 && !v.lastWasCk && !opt.AllowOpenTail {
		v.fail(ProblemTruncated, v.res.LastCheckpoint+1, fmt.Sprintf(
			"the log ends at seq %d without a signed checkpoint after seq %d: records were cut from its end, or the server crashed or is still writing (use --allow-open-tail for a live log)",
			v.res.LastSeq, v.res.LastCheckpoint))
	}
	v.res.Replica = string(v.replica)
	v.res.UnsignedTail = v.res.LastSeq - v.res.LastCheckpoint
	if v.res.Records == 0 {
		v.res.UnsignedTail = 0
	}
	return v.res, nil
}

type verifier struct {
	opt       VerifyOptions
	res       VerifyResult
	prevHex   [64]byte
	havePrev  bool
	lastWasCk bool
	name      string
	line      int
	fileFirst uint64 // seq of the first line of the current file
	// lastSigned is the seq of the last checkpoint or start record seen.
	lastSigned uint64
	// replica is the replica whose trail is verified (nil: not known yet).
	replica []byte
	// fileNamed: the current file has a log file's name; fileReplica is
	// the replica it names ("" for a log without replica ids).
	fileNamed   bool
	fileReplica string
}

func (v *verifier) fail(kind string, seq uint64, msg string) {
	v.res.Problem = &Problem{Kind: kind, Seq: seq, File: v.name, Line: v.line, Message: msg}
}

func (v *verifier) file(name string, r io.Reader) error {
	v.name, v.line = name, 0
	var ok bool
	v.fileReplica, _, ok = parseFileName(name)
	v.fileNamed = ok
	if ok && v.fileReplica != "" && v.replica == nil {
		v.replica = []byte(v.fileReplica)
	}
	return eachLine(r, func(line []byte) error {
		v.line++
		if line[len(line)-1] != '\n' {
			v.fail(ProblemTruncated, v.res.LastSeq+1, "the file ends inside a record (no newline): it was truncated")
			return errStop
		}
		if !v.check(line[:len(line)-1]) {
			return errStop
		}
		return nil
	})
}

// check verifies one line; false means a problem was recorded.
func (v *verifier) check(line []byte) bool {
	expect := v.res.LastSeq + 1
	seq, prev, err := parseHead(line)
	if err != nil {
		if v.havePrev {
			v.fail(ProblemMalformed, expect, "the line is not an audit record: "+err.Error())
		} else {
			v.fail(ProblemMalformed, 0, "the first line is not an audit record: "+err.Error())
		}
		return false
	}
	if !v.checkReplica(line, seq) {
		return false
	}
	if v.havePrev {
		switch {
		case seq > expect:
			v.fail(ProblemMissing, expect, fmt.Sprintf("records %d..%d are missing (seq %d follows seq %d)", expect, seq-1, seq, expect-1))
			return false
		case seq < expect:
			v.fail(ProblemReordered, seq, fmt.Sprintf("seq %d appears after seq %d: the record was duplicated or moved", seq, expect-1))
			return false
		case !bytes.Equal(prev, v.prevHex[:]):
			v.fail(ProblemAltered, expect-1, fmt.Sprintf("the hash of record %d does not match the prev of record %d: record %d was modified (or replaced)", expect-1, seq, expect-1))
			return false
		}
	} else {
		v.res.FirstSeq = seq
		if seq > v.opt.FirstSeq {
			v.fail(ProblemTruncated, v.opt.FirstSeq, fmt.Sprintf(
				"the log starts at seq %d, not %d: records %d..%d were removed from its head (the oldest files, or the first records of the oldest file); if older files were deleted on purpose, pass the first sequence number kept (--first-seq)",
				seq, v.opt.FirstSeq, v.opt.FirstSeq, seq-1))
			return false
		}
		if seq == 1 && string(prev) != genesis {
			v.fail(ProblemAltered, 1, "record 1 does not start the chain (prev is not the genesis hash)")
			return false
		}
	}
	kind := lineKind(line)
	if v.line == 1 {
		v.fileFirst = seq
		if n, ok := nameSeq(v.name); ok && n < seq {
			v.fail(ProblemTruncated, n, fmt.Sprintf(
				"the file is named for seq %d but begins at seq %d: records %d..%d were removed from its head (or the file was renamed)", n, seq, n, seq-1))
			return false
		}
		if v.res.Format >= 2 && kind != TypeStart {
			v.fail(ProblemTruncated, seq, fmt.Sprintf(
				"the file does not begin with its signed start record (format 2): its first records were removed (it begins at seq %d)", seq))
			return false
		}
	}
	switch kind {
	case TypeCheckpoint, TypeStart:
		if !v.signed(line, kind, seq, prev) {
			return false
		}
		v.lastSigned = seq
		if kind == TypeCheckpoint {
			v.res.Checkpoints++
			v.res.LastCheckpoint = seq
		} else {
			v.res.Starts++
		}
	default:
		v.res.Records++
	}
	// A start record signs the chain before it too: a log may end with one.
	v.lastWasCk = kind != ""
	h := sha256.Sum256(line)
	hex.Encode(v.prevHex[:], h[:])
	v.havePrev = true
	v.res.LastSeq = seq
	return true
}

// signed checks a checkpoint or start record: its key, its signature and,
// in format 2, the head of its file and the unverified range it declares.
func (v *verifier) signed(line []byte, kind string, seq uint64, prev []byte) bool {
	var c signedLine
	if err := json.Unmarshal(line, &c); err != nil {
		v.fail(ProblemMalformed, seq, kind+": "+err.Error())
		return false
	}
	pub, err := ParsePublicKey(c.Key)
	if err != nil {
		v.fail(ProblemSignature, seq, kind+" key: "+err.Error())
		return false
	}
	if v.opt.PublicKey == nil {
		v.opt.PublicKey = pub
		v.res.PublicKey = c.Key
	} else if !pub.Equal(v.opt.PublicKey) {
		v.fail(ProblemSignature, seq, kind+" signed by another key than the trusted one")
		return false
	} else if v.res.PublicKey == "" {
		v.res.PublicKey = c.Key
	}
	msg, err := c.message(kind, seq, string(prev))
	if err != nil {
		v.fail(ProblemMalformed, seq, err.Error())
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil || !ed25519.Verify(v.opt.PublicKey, msg, sig) {
		v.fail(ProblemSignature, seq, kind+" signature does not verify: the "+kind+" or the record before it was altered")
		return false
	}
	if c.V < 2 {
		if v.res.Format >= 2 {
			v.fail(ProblemSignature, seq, fmt.Sprintf("a format-1 checkpoint follows format-%d lines: the log was altered (or written by an older server after a newer one)", v.res.Format))
			return false
		}
		v.res.Format = 1
		return true
	}
	if c.V == 2 && v.res.Format >= 3 {
		v.fail(ProblemSignature, seq, fmt.Sprintf("a format-2 %s follows format-3 lines: the log was altered (or written by an older server after a newer one)", kind))
		return false
	}
	if c.V >= 3 && c.Replica != string(v.replica) {
		v.fail(ProblemForeign, seq, fmt.Sprintf("the %s names replica %q in the trail of replica %q", kind, c.Replica, v.replica))
		return false
	}
	v.res.Format = c.V
	if c.FileStart > seq {
		v.fail(ProblemMalformed, seq, fmt.Sprintf("the %s names its file's first record as seq %d, after itself", kind, c.FileStart))
		return false
	}
	if c.FileStart < v.fileFirst {
		v.fail(ProblemTruncated, c.FileStart, fmt.Sprintf(
			"the %s at seq %d says its file begins at seq %d, but the file given begins at seq %d: records %d..%d were removed from the head of the file",
			kind, seq, c.FileStart, v.fileFirst, c.FileStart, v.fileFirst-1))
		return false
	}
	if kind == TypeStart {
		// The verifier's own view of the records after the last signed
		// line, when it saw that line, must match what the trail declared.
		if v.lastSigned > 0 || v.res.FirstSeq == 1 {
			var from, to uint64
			if v.lastSigned+1 < seq {
				from, to = v.lastSigned+1, seq-1
			}
			if c.UnverifiedFrom != from || c.UnverifiedTo != to {
				v.fail(ProblemMalformed, seq, fmt.Sprintf("the start record declares records %d..%d unverified, but records %d..%d follow the last signed line", c.UnverifiedFrom, c.UnverifiedTo, from, to))
				return false
			}
		}
		if c.UnverifiedFrom > 0 {
			if c.UnverifiedFrom > c.UnverifiedTo || c.UnverifiedTo != seq-1 {
				v.fail(ProblemMalformed, seq, fmt.Sprintf("the start record declares an impossible unverified range %d..%d", c.UnverifiedFrom, c.UnverifiedTo))
				return false
			}
			v.res.Unverified = append(v.res.Unverified, SeqRange{From: c.UnverifiedFrom, To: c.UnverifiedTo, At: seq})
		}
	}
	return true
}

// signedLine holds the fields of a checkpoint or start record.
type signedLine struct {
	Replica        string `json:"replica"`
	Time           string `json:"time"`
	V              int    `json:"v"`
	FileStart      uint64 `json:"file_start"`
	UnverifiedFrom uint64 `json:"unverified_from"`
	UnverifiedTo   uint64 `json:"unverified_to"`
	Key            string `json:"key"`
	Sig            string `json:"sig"`
}

// message is what the line's signature must cover.
func (c *signedLine) message(kind string, seq uint64, prev string) ([]byte, error) {
	switch {
	case kind == TypeCheckpoint && c.V == 0:
		return checkpointMessage(seq, prev, c.Time), nil
	case kind == TypeCheckpoint && c.V == 2:
		return checkpointMessageV2(seq, prev, c.Time, c.FileStart), nil
	case kind == TypeStart && c.V == 2:
		return startMessage(seq, prev, c.Time, c.FileStart, c.UnverifiedFrom, c.UnverifiedTo), nil
	case c.V == 3 && ValidateReplicaID(c.Replica) != nil:
		return nil, fmt.Errorf("the format-3 %s has no valid replica id", kind)
	case kind == TypeCheckpoint && c.V == 3:
		return checkpointMessageV3(c.Replica, seq, prev, c.Time, c.FileStart), nil
	case kind == TypeStart && c.V == 3:
		return startMessageV3(c.Replica, seq, prev, c.Time, c.FileStart, c.UnverifiedFrom, c.UnverifiedTo), nil
	}
	return nil, fmt.Errorf("%s format %d is not supported by this version of coffer (it reads formats 1 to 3)", kind, c.V)
}

var (
	headSeq   = []byte(`{"seq":`)
	headPrev  = []byte(`,"prev":"`)
	ckMark    = []byte(`","type":"checkpoint"`)
	startMark = []byte(`","type":"start"`)
)

// parseHead reads the sequence number and prev hash that start every line,
// without a JSON decoder: `{"seq":N,"prev":"<64 hex>",...`.
func parseHead(line []byte) (uint64, []byte, error) {
	rest, ok := bytes.CutPrefix(line, headSeq)
	if !ok {
		return 0, nil, errors.New(`it does not start with {"seq":`)
	}
	i := 0
	for i < len(rest) && i < 20 && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	seq, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil || seq == 0 {
		return 0, nil, errors.New("bad sequence number")
	}
	rest, ok = bytes.CutPrefix(rest[i:], headPrev)
	if !ok || len(rest) < 66 || rest[64] != '"' || rest[65] != ',' {
		return 0, nil, errors.New("bad prev hash")
	}
	return seq, rest[:64], nil
}

// lineKind reports TypeCheckpoint or TypeStart for a signed line, "" for
// any other, from the type that follows the head.
func lineKind(line []byte) string {
	i := bytes.Index(line, headPrev)
	if i <= 0 || len(line) < i+len(headPrev)+64 {
		return ""
	}
	rest := line[i+len(headPrev)+64:]
	switch {
	case bytes.HasPrefix(rest, ckMark):
		return TypeCheckpoint
	case bytes.HasPrefix(rest, startMark):
		return TypeStart
	}
	return ""
}

func isCheckpoint(line []byte) bool { return lineKind(line) == TypeCheckpoint }

var (
	typeMark    = []byte(`","type":"`)
	replicaMark = []byte(`,"replica":"`)
)

// lineReplica returns the replica a line names: the "replica" member that
// follows its type (format 3); ok is false when there is none.
func lineReplica(line []byte) (replica []byte, ok bool) {
	i := bytes.Index(line, headPrev)
	if i <= 0 || len(line) < i+len(headPrev)+64 {
		return nil, false
	}
	rest, ok := bytes.CutPrefix(line[i+len(headPrev)+64:], typeMark)
	if !ok {
		return nil, false
	}
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	if rest, ok = bytes.CutPrefix(rest[j+1:], replicaMark); !ok {
		return nil, false
	}
	j = bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// checkReplica checks that a line belongs to the trail verified: in format
// 3 every line names the trail's replica; a file named for a replica holds
// only its lines, a file of a log without replica ids none.
func (v *verifier) checkReplica(line []byte, seq uint64) bool {
	r, has := lineReplica(line)
	switch {
	case has && v.fileNamed && v.fileReplica == "":
		v.fail(ProblemForeign, seq, fmt.Sprintf("record seq %d names replica %q, in a file without replica id: it was moved from that replica's trail", seq, r))
		return false
	case has && v.replica == nil:
		v.replica = bytes.Clone(r)
	case has && !bytes.Equal(r, v.replica):
		v.fail(ProblemForeign, seq, fmt.Sprintf("record seq %d names replica %q, in the trail of replica %q: it was moved between the replicas' trails", seq, r, v.replica))
		return false
	case !has && (v.res.Format >= 3 || v.fileNamed && v.fileReplica != ""):
		v.fail(ProblemForeign, seq, fmt.Sprintf("record seq %d names no replica, in the trail of replica %q (format 3): it does not belong to it", seq, v.replica))
		return false
	}
	return true
}
