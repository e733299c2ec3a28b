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
	ProblemTruncated = "truncated" // a file ends inside a record, or the log lost its signed end
	ProblemMalformed = "malformed" // a line is not a record
	ProblemSignature = "signature" // a checkpoint's signature or key is wrong
)

// Problem is the first fault Verify finds.
type Problem struct {
	Kind string `json:"kind"`
	// Seq is the sequence number of the first record missing, altered,
	// reordered or truncated.
	Seq     uint64 `json:"seq"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func (p *Problem) Error() string {
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
}

// VerifyResult summarizes a verification.
type VerifyResult struct {
	Files          int      `json:"files"`
	Records        uint64   `json:"records"`
	Checkpoints    uint64   `json:"checkpoints"`
	FirstSeq       uint64   `json:"first_seq"`
	LastSeq        uint64   `json:"last_seq"`
	LastCheckpoint uint64   `json:"last_checkpoint"`
	UnsignedTail   uint64   `json:"unsigned_tail"`
	PublicKey      string   `json:"public_key,omitempty"`
	Problem        *Problem `json:"problem,omitempty"`
}

// Verify checks the chain, the sequence and the checkpoint signatures of
// files, in order, as one stream. It stops at the first problem, which it
// returns in the result; the error is for I/O failures only.
func Verify(files []string, opt VerifyOptions) (VerifyResult, error) {
	v := verifier{opt: opt}
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
}

func (v *verifier) fail(kind string, seq uint64, msg string) {
	v.res.Problem = &Problem{Kind: kind, Seq: seq, File: v.name, Line: v.line, Message: msg}
}

func (v *verifier) file(name string, r io.Reader) error {
	v.name, v.line = name, 0
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
		if seq == 1 && string(prev) != genesis {
			v.fail(ProblemAltered, 1, "record 1 does not start the chain (prev is not the genesis hash)")
			return false
		}
	}
	ck := isCheckpoint(line)
	if ck {
		if !v.checkpoint(line, seq, prev) {
			return false
		}
		v.res.Checkpoints++
		v.res.LastCheckpoint = seq
	} else {
		v.res.Records++
	}
	v.lastWasCk = ck
	h := sha256.Sum256(line)
	hex.Encode(v.prevHex[:], h[:])
	v.havePrev = true
	v.res.LastSeq = seq
	return true
}

func (v *verifier) checkpoint(line []byte, seq uint64, prev []byte) bool {
	var c struct {
		Time string `json:"time"`
		Key  string `json:"key"`
		Sig  string `json:"sig"`
	}
	if err := json.Unmarshal(line, &c); err != nil {
		v.fail(ProblemMalformed, seq, "checkpoint: "+err.Error())
		return false
	}
	pub, err := ParsePublicKey(c.Key)
	if err != nil {
		v.fail(ProblemSignature, seq, "checkpoint key: "+err.Error())
		return false
	}
	if v.opt.PublicKey == nil {
		v.opt.PublicKey = pub
		v.res.PublicKey = c.Key
	} else if !pub.Equal(v.opt.PublicKey) {
		v.fail(ProblemSignature, seq, "checkpoint signed by another key than the trusted one")
		return false
	} else if v.res.PublicKey == "" {
		v.res.PublicKey = c.Key
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil || !ed25519.Verify(v.opt.PublicKey, checkpointMessage(seq, string(prev), c.Time), sig) {
		v.fail(ProblemSignature, seq, "checkpoint signature does not verify: the checkpoint or the record before it was altered")
		return false
	}
	return true
}

var (
	headSeq  = []byte(`{"seq":`)
	headPrev = []byte(`,"prev":"`)
	ckMark   = []byte(`","type":"checkpoint"`)
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

func isCheckpoint(line []byte) bool {
	i := bytes.Index(line, headPrev)
	return i > 0 && bytes.HasPrefix(line[i+len(headPrev)+64:], ckMark)
}
