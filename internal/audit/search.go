package audit

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"time"
)

// Query selects records. Empty fields match everything.
type Query struct {
	Since, Until time.Time
	// Principal matches the accessor, id, name or token HMAC.
	Principal string
	// Action matches exactly, or by prefix when it ends in "*" ("key:*").
	Action   string
	Resource string // key id, alias or path: exact, or the key_id
	Outcome  string // ok or error, or an error code
	// Checkpoints includes checkpoint and start lines.
	Checkpoints bool
	// Replicas, if set, keeps the records of these replicas only.
	Replicas []string
}

// Match reports whether r matches q.
func (q *Query) Match(r *Record) bool {
	if len(q.Replicas) > 0 && !slices.Contains(q.Replicas, r.Replica) {
		return false
	}
	if r.Type == TypeCheckpoint || r.Type == TypeStart {
		return q.Checkpoints
	}
	if !q.Since.IsZero() && r.Time.Before(q.Since) {
		return false
	}
	if !q.Until.IsZero() && !r.Time.Before(q.Until) {
		return false
	}
	if p := q.Principal; p != "" && p != r.Principal.Accessor && p != r.Principal.ID && p != r.Principal.Name && p != r.TokenHMAC {
		return false
	}
	if a := q.Action; a != "" {
		if pre, ok := strings.CutSuffix(a, "*"); ok {
			if !strings.HasPrefix(r.Action, pre) {
				return false
			}
		} else if a != r.Action {
			return false
		}
	}
	if q.Resource != "" && q.Resource != r.Resource && q.Resource != r.KeyID && !r.itemMatch(func(it *Item) bool {
		return q.Resource == it.Resource || q.Resource == it.KeyID
	}) {
		return false
	}
	if o := q.Outcome; o != "" && o != r.Outcome && o != r.ErrorCode && !r.itemMatch(func(it *Item) bool {
		return o == it.Outcome || o == it.ErrorCode
	}) {
		return false
	}
	return true
}

// itemMatch reports whether some batch item of r satisfies f: a batch
// record matches a key or an outcome any of its items has.
func (r *Record) itemMatch(f func(*Item) bool) bool {
	for i := range r.Items {
		if f(&r.Items[i]) {
			return true
		}
	}
	return false
}

// Search streams the lines of r that match q to fn. A literal prefilter
// skips the JSON decoding of lines that cannot match.
func Search(r io.Reader, q Query, fn func(line []byte, rec *Record) error) error {
	match := q.matcher()
	return eachLine(r, func(line []byte) error {
		if rec := match(line); rec != nil {
			return fn(bytes.TrimSuffix(line, []byte("\n")), rec)
		}
		return nil
	})
}

// matcher returns a function that decodes a line and returns its record
// when it matches q (nil otherwise). A literal prefilter skips the JSON
// decoding of lines that cannot match.
func (q *Query) matcher() func(line []byte) *Record {
	var needles [][]byte
	for _, s := range []string{q.Principal, strings.TrimSuffix(q.Action, "*"), q.Resource} {
		if s != "" {
			b, _ := json.Marshal(s)
			needles = append(needles, b[1:len(b)-1])
		}
	}
	return func(line []byte) *Record {
		for _, n := range needles {
			if !bytes.Contains(line, n) {
				return nil
			}
		}
		var rec Record
		if json.Unmarshal(line, &rec) == nil && q.Match(&rec) {
			return &rec
		}
		return nil
	}
}
