package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/ciphertext"
)

// Bounds on what one request body may make the server hold. A body is
// checked as it is read, before encoding/json builds anything from it, so a
// body over a bound is refused at the byte that crosses it: a batch of
// 5 million empty items stops being read at item 1,001.
const (
	// MaxJSONDepth bounds the nesting of a request body (the deepest
	// request, a batch item's context, is 3 deep).
	MaxJSONDepth = 16
	// MaxJSONArray bounds the elements of any array in a body: batch
	// items, fingerprints, policy names.
	MaxJSONArray = MaxBatchItems
	// MaxJSONObject bounds the members of any object in a body (an
	// encryption context holds at most 64 pairs, a key at most 50 tags).
	MaxJSONObject = 256
	// MaxJSONValues bounds the values of a whole body: 1,000 batch items
	// with a full 64-pair context each fit.
	MaxJSONValues = 100_000

	// MaxBodyBudget bounds the bytes of the large request bodies being
	// read and decoded at once, server-wide; a request that cannot get
	// its share within bodyWait is refused with 503 and Retry-After.
	MaxBodyBudget = 4 * MaxBatchBody
	// smallBody is the declared size up to which a body needs no share of
	// the budget (almost every request).
	smallBody = 64 << 10
	bodyWait  = 2 * time.Second
)

// PreAuthorizer is optionally implemented by an Authorizer that can refuse
// a principal an action on every resource before the request body is read
// (iam.Service does). handle asks it first, so a caller without rights for
// an action cannot make the server read and decode a large body.
type PreAuthorizer interface {
	PreAuthorize(p *auth.Principal, action string) error
}

// bodyBudget is the server-wide budget of large bodies in flight.
type bodyBudget struct{ sem *semaphore.Weighted }

func newBodyBudget() *bodyBudget { return &bodyBudget{sem: semaphore.NewWeighted(MaxBodyBudget)} }

// errBusy refuses a request whose body does not fit the budget now.
var errBusy = &apiError{http.StatusServiceUnavailable, "busy",
	"the server is reading too many large request bodies at once; retry in a second (Retry-After) or send smaller batches"}

// acquire reserves the share of a request's body (its declared length, or
// the route's limit when the length is not declared) and returns the
// function that gives it back. Small declared bodies take no share.
func (b *bodyBudget) acquire(r *http.Request, limit int64) (func(), error) {
	if !largeBody(r) {
		return func() {}, nil
	}
	n := r.ContentLength
	if n < 0 || n > limit {
		n = limit // unknown (chunked), or over the limit: refused at limit+1 bytes
	}
	if n <= smallBody {
		return func() {}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), bodyWait)
	defer cancel()
	if err := b.sem.Acquire(ctx, n); err != nil {
		if r.Context().Err() != nil {
			return nil, r.Context().Err()
		}
		return nil, errBusy
	}
	return func() { b.sem.Release(n) }, nil
}

// largeBody reports whether r has a body that is not declared small
// (undeclared, chunked, or over smallBody bytes).
func largeBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet || r.Method == http.MethodDelete {
		return false
	}
	return r.ContentLength < 0 || r.ContentLength > smallBody
}

// errShape is wrapped by every bound a body's JSON breaks.
var errShape = errors.New("request body shape")

// shapeReader passes a JSON body through unchanged and checks its shape as
// it goes: nesting, elements per array, members per object and values in
// all. It does not validate the syntax (encoding/json does, after): for a
// well-formed body its counts are exact; for a malformed one the decoder
// fails anyway. It holds no copy of the body.
type shapeReader struct {
	r   io.Reader
	err error

	inString, escape bool
	depth            int
	values           int
	stack            [MaxJSONDepth + 1]shapeFrame

	// maxObject, when not 0, replaces MaxJSONObject for a request type
	// that bounds its one large object itself (objectBounded); objectWhy
	// says what that bound is.
	maxObject int
	objectWhy string
}

// objectBounded is a request type whose objects may hold more members
// than MaxJSONObject, up to its own bound (POST /v1/secrets/wait names up
// to 1000 secrets in one object).
type objectBounded interface {
	jsonObjectBound() (int, string)
}

// shapeFrame is one open array or object.
type shapeFrame struct {
	obj   bool
	fresh bool // nothing but whitespace since the bracket
	n     int  // elements (members) so far
}

func (s *shapeReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	for i := 0; i < n; i++ {
		if e := s.scan(p[i]); e != nil {
			s.err = e
			// Nothing of this read is delivered: the decoder fails with
			// this error rather than a syntax error of a cut value.
			return 0, e
		}
	}
	return n, err
}

func (s *shapeReader) scan(c byte) error {
	if s.inString {
		switch {
		case s.escape:
			s.escape = false
		case c == '\\':
			s.escape = true
		case c == '"':
			s.inString = false
		}
		return nil
	}
	switch c {
	case ' ', '\t', '\r', '\n':
		return nil
	}
	if s.depth > 0 {
		f := &s.stack[s.depth]
		if f.fresh && c != ']' && c != '}' {
			f.fresh = false
			if err := s.count(f); err != nil {
				return err
			}
		}
	}
	switch c {
	case '"':
		s.inString = true
	case '[', '{':
		if s.depth == MaxJSONDepth {
			return fmt.Errorf("%w: JSON nested deeper than %d levels; no request is that deep", errShape, MaxJSONDepth)
		}
		s.depth++
		f := &s.stack[s.depth]
		f.obj, f.fresh, f.n = c == '{', true, 0
	case ']', '}':
		if s.depth > 0 {
			s.depth--
		}
	case ',':
		if s.depth > 0 {
			if err := s.count(&s.stack[s.depth]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *shapeReader) count(f *shapeFrame) error {
	f.n++
	s.values++
	switch {
	case !f.obj && f.n > MaxJSONArray:
		return fmt.Errorf("%w: stopped reading at %d items; a batch holds at most %d items (and any list in a request at most %d elements); send the rest in another request",
			errShape, f.n, MaxBatchItems, MaxJSONArray)
	case f.obj && s.maxObject > 0:
		if f.n > s.maxObject {
			return fmt.Errorf("%w: an object with more than %d members; %s", errShape, s.maxObject, s.objectWhy)
		}
	case f.obj && f.n > MaxJSONObject:
		return fmt.Errorf("%w: an object with more than %d members; an encryption context holds at most %d pairs, a key at most 50 tags",
			errShape, MaxJSONObject, ciphertext.MaxContextPairs)
	case s.values > MaxJSONValues:
		return fmt.Errorf("%w: more than %d JSON values in one body; send smaller batches", errShape, MaxJSONValues)
	}
	return nil
}

// checkContexts refuses a request whose encryption contexts break the
// limits every operation enforces (64 pairs, 8 KiB, no empty key), before
// anything of them is recorded or authorized: the audit record then only
// ever holds a bounded context.
func checkContexts(req any) error {
	check := func(what string, ec map[string]string) error {
		if len(ec) == 0 {
			return nil
		}
		if _, err := ciphertext.AppendContext(nil, ec); err != nil {
			return badRequest("%s: %v", what, err)
		}
		return nil
	}
	if d, ok := req.(restFormer); ok {
		req = d.restForm() // a compatible door's request: as its REST twin
	}
	switch v := req.(type) {
	case *client.EncryptRequest:
		return check("context", v.Context)
	case *client.DecryptRequest:
		return check("context", v.Context)
	case *client.DataKeyRequest:
		return check("context", v.Context)
	case *client.ReEncryptRequest:
		if err := check("source_context", v.SourceContext); err != nil {
			return err
		}
		return check("destination_context", v.DestinationContext)
	case *client.BatchEncryptRequest:
		for i := range v.Items {
			if err := check("items["+strconv.Itoa(i)+"].context", v.Items[i].Context); err != nil {
				return err
			}
		}
	case *client.BatchDecryptRequest:
		for i := range v.Items {
			if err := check("items["+strconv.Itoa(i)+"].context", v.Items[i].Context); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeResults writes a batch answer ({"results":[...]}) one result at a
// time through a small buffer, so a 16 MiB answer is never held twice
// more in memory as one encoded buffer and its copy.
func writeResults[T any](w http.ResponseWriter, status int, results []T) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(`{"results":[`)
	enc := json.NewEncoder(bw)
	for i := range results {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(&results[i]); err != nil {
			return // the answer is cut; the client sees truncated JSON
		}
	}
	bw.WriteString("]}\n")
	bw.Flush()
}

// wipeRequest clears the plaintexts a request carried, once the call that
// used them returned.
func wipeRequest(req any) {
	if d, ok := req.(restFormer); ok {
		req = d.restForm() // shares its plaintext with the door's request
	}
	switch v := req.(type) {
	case *client.EncryptRequest:
		clear(v.Plaintext)
	case *client.BatchEncryptRequest:
		for i := range v.Items {
			clear(v.Items[i].Plaintext)
		}
	}
}
