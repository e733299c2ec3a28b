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
)

// checkTail verifies the end of the log an opening trail continues: the
// last signed line (checkpoint or start record) must verify with the
// trail's key, and every record after it must chain to it. It returns the
// records after that line (0 0 when none): no trail signed them, so the
// start record declares them inherited unverified. An error means the log
// cannot be continued.
func (t *Trail) checkTail() (from, to uint64, err error) {
	if t.seq == 0 {
		return 0, 0, nil // a new log
	}
	files, err := t.chainFiles()
	if err != nil {
		return 0, 0, err
	}
	// Lines from the last signed line to the end; the newest file may
	// have none (a format-1 file, or one cut short), then the ones before.
	var lines [][]byte
	signed := false
	for i := len(files) - 1; i >= 0 && !signed; i-- {
		end := int64(-1)
		if files[i] == t.name {
			end = t.size
		}
		var ls [][]byte
		ls, signed, err = tailLines(files[i], end)
		if err != nil {
			return 0, 0, err
		}
		lines = append(ls, lines...)
	}
	if len(lines) == 0 {
		return 0, 0, nil
	}
	refuse := func(seq uint64, format string, a ...any) error {
		return fmt.Errorf("audit: cannot continue the log in %s at record seq %d: %s. The server does not sign over records it cannot vouch for: check the log with 'coffer audit verify --allow-open-tail%s %s', then move the audit files of this replica aside (keep them as evidence) to start a new log",
			t.opt.Dir, seq, fmt.Sprintf(format, a...), replicaFlag(t.opt.ReplicaID), t.opt.Dir)
	}
	seq, prev, err := parseHead(lines[0])
	if err != nil {
		return 0, 0, refuse(0, "malformed line: %v", err)
	}
	anchor, prevHash, rest := seq-1, string(prev), lines
	if signed {
		if err := checkSignedLine(lines[0], seq, prev, t.opt.Keys.PublicKey()); err != nil {
			return 0, 0, refuse(seq, "the last signed line does not verify with this server's audit key: %v", err)
		}
		h := sha256.Sum256(lines[0])
		anchor, prevHash, rest = seq, hex.EncodeToString(h[:]), lines[1:]
	} else if seq == 1 && string(prev) != genesis {
		return 0, 0, refuse(1, "record 1 does not start the chain")
	}
	expect := anchor + 1
	for _, l := range rest {
		s, p, err := parseHead(l)
		switch {
		case err != nil:
			return 0, 0, refuse(expect, "malformed line after the last signed line: %v", err)
		case s != expect:
			return 0, 0, refuse(expect, "seq %d follows seq %d after the last signed line (seq %d)", s, expect-1, anchor)
		case string(p) != prevHash:
			return 0, 0, refuse(expect-1, "record %d after the last signed line (seq %d) was altered: the next record's prev does not match", expect-1, anchor)
		}
		h := sha256.Sum256(l)
		prevHash = hex.EncodeToString(h[:])
		expect++
	}
	if last := expect - 1; last > anchor {
		return anchor + 1, last, nil
	}
	return 0, 0, nil
}

// tailLines returns the complete lines of a file (without newlines) from
// its last signed line to offset end (-1: the file's size), and whether it
// found a signed line; without one it returns every line. It reads from the
// end in growing chunks, so a long file with a short tail costs little.
func tailLines(name string, end int64) ([][]byte, bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if end < 0 {
		st, err := f.Stat()
		if err != nil {
			return nil, false, err
		}
		end = st.Size()
	}
	var buf []byte
	chunk := int64(64 << 10)
	for off := end; ; chunk *= 2 {
		start := max(off-chunk, 0)
		b := make([]byte, off-start)
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		buf = append(b, buf...)
		off = start
		body := buf
		if start > 0 {
			i := bytes.IndexByte(body, '\n')
			if i < 0 {
				continue
			}
			body = body[i+1:]
		}
		lines := bytes.SplitAfter(body, []byte("\n"))
		if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
			lines = lines[:n-1]
		}
		for i := range lines {
			lines[i] = bytes.TrimSuffix(lines[i], []byte("\n"))
		}
		for j := len(lines) - 1; j >= 0; j-- {
			if lineKind(lines[j]) != "" {
				return lines[j:], true, nil
			}
		}
		if start == 0 {
			return lines, false, nil
		}
	}
}

// checkSignedLine verifies the signature of a checkpoint or start record
// with pub.
func checkSignedLine(line []byte, seq uint64, prev []byte, pub ed25519.PublicKey) error {
	var c signedLine
	if err := json.Unmarshal(line, &c); err != nil {
		return err
	}
	k, err := ParsePublicKey(c.Key)
	if err != nil {
		return err
	}
	if !k.Equal(pub) {
		return errors.New("it is signed by another audit key")
	}
	msg, err := c.message(lineKind(line), seq, string(prev))
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil || !ed25519.Verify(pub, msg, sig) {
		return errors.New("its signature does not verify: it or the record before it was altered")
	}
	return nil
}

// replicaFlag is the --replica option naming replica ("" for none).
func replicaFlag(replica string) string {
	if replica == "" {
		return ""
	}
	return " --replica " + replica
}
