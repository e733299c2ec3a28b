package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Failover across several endpoints.
//
// A Client made with several addresses (New("https://a:8200,https://b:8200")
// or NewEndpoints) sends each request to one endpoint, its preferred one, and
// keeps using it while it answers; it does not spread requests round-robin.
// When an attempt fails in a way that another endpoint may not, the Client
// tries the next one, as long as doing so cannot apply the request twice:
//
//   - nothing was sent (the connection could not be made: refused, reset
//     during the dial, DNS, TLS handshake, a timeout before a connection was
//     obtained): every request goes on to the next endpoint;
//   - the request was sent but its outcome is unknown (reset, EOF, timeout
//     after it was written), or the server answered 503 with a code saying
//     this replica cannot serve (sealed, replica_stale, ...): only requests
//     that are safe to repeat go on. Those are GETs, the cryptographic
//     operations under /v1/kms/, the read-only POSTs (token lookup, policy
//     simulation, audit hash) and requests whose context is marked with
//     Idempotent. A write (create key, rotate, policy put, revoke, login, ...)
//     returns the error: it may have been applied.
//
// An endpoint that failed is tried after the others for FailoverBackoff
// (default 5s); the endpoint that answered last becomes the preferred one.

// DefaultFailoverBackoff is how long a failed endpoint is tried after the
// others, unless WithFailoverBackoff says otherwise.
const DefaultFailoverBackoff = 5 * time.Second

// unavailableCodes are the error codes of a 503 that says this replica, not
// the request, is the problem: another replica may serve it.
var unavailableCodes = map[string]bool{
	"sealed":              true, // this replica is sealed; each replica is unsealed on its own
	"not_initialized":     true,
	"replica_stale":       true, // this replica cannot prove its caches fresh
	"keyring_mismatch":    true, // this replica's barrier keyring differs from the store's
	"storage_unavailable": true, // this replica lost its storage
	"unavailable":         true,
	"audit_unavailable":   true, // this replica's audit trail cannot record: refused with no effect
	"busy":                true, // this replica's large-body budget is spent
	"timeout":             true, // a server-side deadline passed on this replica
}

// endpoint is one server address of a Client.
type endpoint struct {
	base      string       // scheme://host[:port][/prefix], no trailing slash
	downUntil atomic.Int64 // unix nanoseconds until which it is tried last; 0: healthy
}

// WithFailoverBackoff sets how long an endpoint that failed is tried only
// after the others (default DefaultFailoverBackoff). It matters only for a
// Client with several endpoints.
func WithFailoverBackoff(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("client: WithFailoverBackoff(%s): must not be negative", d)
		}
		c.backoff = &d
		return nil
	}
}

// WithAttemptTimeout bounds each attempt on one endpoint of a Client with
// several endpoints, so that a replica that accepts connections but does not
// answer (stopped, overloaded) does not use up the whole deadline of the
// caller's context. A request that is safe to repeat and times out goes on to
// the next endpoint; a write is bounded only until it has a connection (after
// that it may be applied, and it is left to the caller's context). Zero, the
// default, means no bound beyond the context's.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("client: WithAttemptTimeout(%s): must not be negative", d)
		}
		c.attemptTimeout = d
		return nil
	}
}

type idempotentKey struct{}

// attemptExtraKey marks a request that the server answers only after a
// wait (SecretWait): its value is added to the attempt timeout.
type attemptExtraKey struct{}

// Idempotent returns a context that marks the requests made with it as safe
// to send again: a Client with several endpoints then sends such a write to
// the next endpoint after an ambiguous failure, as it does for reads and
// cryptographic operations. Use it only for a call whose repetition has the
// same effect as one call (for example putting the same policy document).
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

// NewEndpoints returns a Client for a replicated server reachable at each of
// addrs (http:// or https:// URLs, as for New). Requests go to one endpoint
// and move to the next as the failover rules above allow. An empty list
// means DefaultAddress.
func NewEndpoints(addrs []string, opts ...Option) (*Client, error) {
	return newClient(addrs, opts)
}

// splitAddresses splits a comma-separated address list. An address holding
// a comma in its credentials (which are refused anyway) is not shown.
func splitAddresses(addr string) ([]string, error) {
	if !strings.Contains(addr, ",") {
		return []string{addr}, nil
	}
	if strings.Contains(addr, "@") {
		return nil, fmt.Errorf("client: invalid address list %q: an address must not carry credentials (give a token with WithToken or COFFER_TOKEN)", redactList(addr))
	}
	parts := strings.Split(addr, ",")
	for i, p := range parts {
		if strings.TrimSpace(p) == "" {
			return nil, fmt.Errorf("client: invalid address list %q: address %d of %d is empty", addr, i+1, len(parts))
		}
	}
	return parts, nil
}

// redactList replaces whatever precedes each "@" back to the scheme before
// it with REDACTED. It over-redacts rather than show part of a credential
// that holds a comma.
func redactList(s string) string {
	var b strings.Builder
	for {
		at := strings.Index(s, "@")
		if at < 0 {
			b.WriteString(s)
			return b.String()
		}
		pre := s[:at]
		if i := strings.LastIndex(pre, "://"); i >= 0 {
			b.WriteString(pre[:i+3])
		}
		b.WriteString("REDACTED@")
		s = s[at+1:]
	}
}

// normalizeAddresses validates every address and refuses duplicates.
func normalizeAddresses(addrs []string) ([]*endpoint, error) {
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	var eps []*endpoint
	seen := map[string]bool{}
	for _, a := range addrs {
		base, err := normalizeAddress(a)
		if err != nil {
			return nil, err
		}
		if seen[base] {
			return nil, fmt.Errorf("client: address %s is listed twice", base)
		}
		seen[base] = true
		eps = append(eps, &endpoint{base: base})
	}
	return eps, nil
}

// Endpoints returns every server address of the Client, in the order given.
func (c *Client) Endpoints() []string {
	out := make([]string, len(c.endpoints))
	for i, ep := range c.endpoints {
		out[i] = ep.base
	}
	return out
}

// order is the preferred endpoint followed by the others in the given order,
// the ones in back-off last.
func (c *Client) order(now time.Time) []int {
	n := len(c.endpoints)
	p := int(c.pref.Load()) % n
	var up, down []int
	for k := range n {
		i := (p + k) % n
		if c.endpoints[i].downUntil.Load() > now.UnixNano() {
			down = append(down, i)
		} else {
			up = append(up, i)
		}
	}
	return append(up, down...)
}

// retrySafe reports whether a request may be sent again after it may have
// reached a server: reads, cryptographic operations, read-only POSTs, and
// requests the caller marked Idempotent.
func retrySafe(ctx context.Context, method, path string) bool {
	if v, _ := ctx.Value(idempotentKey{}).(bool); v {
		return true
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodPost:
		if strings.HasPrefix(path, "/v1/kms/") {
			return true
		}
		switch path {
		case "/v1/auth/token/lookup", "/v1/policies/simulate", "/v1/sys/audit/hash":
			return true
		}
	}
	return false
}

// replicaUnavailable reports whether err is an answer saying this server
// cannot serve now (a 503 with a code in unavailableCodes, or a 502, 503 or
// 504 without a Coffer error body, as a proxy in front of a replica sends).
func replicaUnavailable(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.StatusCode {
	case http.StatusServiceUnavailable:
		return ae.Code == "" || unavailableCodes[ae.Code]
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return ae.Code == ""
	}
	return false
}

// attemptResult says what one attempt on one endpoint came to.
type attemptResult int

const (
	attemptDone    attemptResult = iota // an answer to return (success or a definite error)
	attemptNotSent                      // no connection was made: nothing reached the server
	attemptUnknown                      // sent, outcome unknown (transport error after the connection)
	attemptRefused                      // the server answered that it cannot serve now (503 unavailable)
)

// attempt is the per-attempt bookkeeping failover needs.
type attempt struct {
	gotConn  atomic.Bool
	timedOut atomic.Bool
}

// withAttempt returns the context for one attempt: it records whether a
// connection was obtained and applies the attempt timeout.
func (c *Client) withAttempt(ctx context.Context, a *attempt, safe bool) (context.Context, func()) {
	if len(c.endpoints) == 1 {
		return ctx, func() {}
	}
	actx, cancel := context.WithCancel(ctx)
	var timer *time.Timer
	if c.attemptTimeout > 0 {
		timeout := c.attemptTimeout
		if extra, ok := ctx.Value(attemptExtraKey{}).(time.Duration); ok {
			timeout += extra // a long-poll is answered only after its wait
		}
		timer = time.AfterFunc(timeout, func() {
			// A write that has its connection is left alone: cutting it
			// now would leave its outcome unknown for no gain.
			if safe || !a.gotConn.Load() {
				a.timedOut.Store(true)
				cancel()
			}
		})
	}
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { a.gotConn.Store(true) }}
	actx = httptrace.WithClientTrace(actx, trace)
	return actx, func() {
		if timer != nil {
			timer.Stop()
		}
		cancel()
	}
}

// classify sorts the error of one attempt.
func (a *attempt) classify(parent context.Context, err error, transport bool) attemptResult {
	switch {
	case err == nil:
		return attemptDone
	case parent.Err() != nil:
		// The caller's context ended: nothing more to try.
		return attemptDone
	case !transport:
		if replicaUnavailable(err) {
			return attemptRefused
		}
		return attemptDone
	case !a.gotConn.Load():
		return attemptNotSent
	default:
		return attemptUnknown
	}
}

// EndpointError is the failure of one attempt on one endpoint.
type EndpointError struct {
	Endpoint string
	Err      error
}

// Error is "endpoint: error".
func (e EndpointError) Error() string {
	err := e.Err
	// A *url.Error repeats the method and the whole URL: say only what
	// went wrong.
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	return e.Endpoint + ": " + err.Error()
}

// Unwrap returns the attempt's error.
func (e EndpointError) Unwrap() error { return e.Err }

// FailoverError is returned by a Client with several endpoints when a
// request failed on every endpoint it was sent to. errors.Is and errors.As
// see every attempt's error (an *APIError with code "sealed", a
// connection refused, ...).
type FailoverError struct {
	// Method and Path identify the request.
	Method, Path string
	// Attempts are the endpoints tried, in order, with their errors.
	Attempts []EndpointError
	// MaybeApplied is set when the last attempt reached its server and its
	// outcome is unknown: the request was not sent to the remaining
	// endpoints because it is not safe to repeat.
	MaybeApplied bool
	// Untried are the endpoints the request was not sent to.
	Untried []string
}

// Error names every endpoint tried and what went wrong there.
func (e *FailoverError) Error() string {
	var b strings.Builder
	switch {
	case e.MaybeApplied:
		fmt.Fprintf(&b, "client: %s %s failed after it was sent, so it may have been applied; it is not safe to repeat", e.Method, e.Path)
		if len(e.Untried) > 0 {
			b.WriteString(" and was not sent to " + strings.Join(e.Untried, ", "))
		}
		b.WriteString(": ")
	case len(e.Untried) > 0:
		fmt.Fprintf(&b, "client: %s %s was refused, and is not safe to repeat on %s: ", e.Method, e.Path, strings.Join(e.Untried, ", "))
	default:
		fmt.Fprintf(&b, "client: no endpoint could serve %s %s: ", e.Method, e.Path)
	}
	for i, a := range e.Attempts {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(a.Error())
	}
	return b.String()
}

// Unwrap returns every attempt's error.
func (e *FailoverError) Unwrap() []error {
	out := make([]error, len(e.Attempts))
	for i, a := range e.Attempts {
		out[i] = a
	}
	return out
}

// oneEndpoint refuses an operation that acts on one server (unseal, seal)
// when the Client has several.
func (c *Client) oneEndpoint(op string) error {
	if len(c.endpoints) == 1 {
		return nil
	}
	return fmt.Errorf("client: %s acts on one server, and this client has %d endpoints (%s); use a client for that server's address alone",
		op, len(c.endpoints), strings.Join(c.Endpoints(), ", "))
}

// sendFailover runs one request over the endpoints. try makes one attempt
// on base and reports whether a returned error came from the transport (no
// HTTP answer).
func (c *Client) sendFailover(ctx context.Context, method, path string, try func(ctx context.Context, base string) (int, bool, error)) (int, error) {
	if len(c.endpoints) == 1 {
		status, _, err := try(ctx, c.endpoints[0].base)
		return status, err
	}
	safe := retrySafe(ctx, method, path)
	order := c.order(time.Now())
	var failed []EndpointError
	for k, i := range order {
		ep := c.endpoints[i]
		var a attempt
		actx, done := c.withAttempt(ctx, &a, safe)
		status, transport, err := try(actx, ep.base)
		done()
		if err != nil && transport && a.timedOut.Load() && ctx.Err() == nil {
			err = fmt.Errorf("no answer within the attempt timeout of %s: %w", c.attemptTimeout, err)
		}
		res := a.classify(ctx, err, transport)
		if res == attemptDone {
			if err == nil || !transport {
				// The endpoint answered: it is healthy, and preferred.
				ep.downUntil.Store(0)
				c.pref.Store(int32(i))
			}
			if err == nil || len(failed) == 0 {
				return status, err
			}
			return status, &FailoverError{Method: method, Path: path, Attempts: append(failed, EndpointError{ep.base, err})}
		}
		// This endpoint cannot serve now: later requests start elsewhere.
		ep.downUntil.Store(time.Now().Add(c.backoff).UnixNano())
		failed = append(failed, EndpointError{ep.base, err})
		if res == attemptNotSent || safe {
			continue
		}
		// Sent (or answered 503) and not safe to repeat: stop here.
		var untried []string
		for _, j := range order[k+1:] {
			untried = append(untried, c.endpoints[j].base)
		}
		if res == attemptRefused && len(failed) == 1 {
			// The server answered and refused: its answer is the result.
			return status, err
		}
		return status, &FailoverError{Method: method, Path: path, Attempts: failed, MaybeApplied: res == attemptUnknown, Untried: untried}
	}
	if len(failed) == 1 {
		return 0, failed[0].Err
	}
	return 0, &FailoverError{Method: method, Path: path, Attempts: slices.Clip(failed)}
}
