// Package server is Coffer's REST front door: JSON over HTTP/1.1 and HTTP/2
// under /v1. Every route walks the same path, written once in handle:
//
//	decode -> authenticate -> authorize -> service call -> audit -> encode
//
// Handlers hold no business rules; they name the action and the resource and
// call one service method. Errors become HTTP statuses in one table
// (errors.go). Authentication, authorization and audit are interfaces, so
// the identity, policy and audit engines plug in without touching a handler.
package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/iam"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/monitor"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/replica"
	"github.com/cofferkms/coffer/internal/server/awskms"
	"github.com/cofferkms/coffer/internal/sys"
)

// Authenticator turns a request's credential into a principal. src is the
// caller's address (the zero Addr when unknown).
type Authenticator interface {
	Authenticate(r *http.Request, src netip.Addr) (auth.Principal, error)
}

// Authorizer decides whether a principal may perform req (action, resource,
// encryption context, source, time). It returns an error wrapping
// auth.ErrForbidden to deny; it may fill req's principal and aliases.
type Authorizer interface {
	Authorize(ctx context.Context, p *auth.Principal, req *policy.Request) error
}

// Body limits.
const (
	MaxBody      = 1 << 20
	MaxBatchBody = 16 << 20
	// MaxBatchItems bounds the items of one batch request.
	MaxBatchItems = 1000
)

// Options configure a Server; zero values take defaults.
type Options struct {
	Authenticator Authenticator // default: Credentials over Sys.Tokens and Sys.IAM
	Authorizer    Authorizer    // default: Sys.IAM
	Audit         audit.Recorder
	Logger        *slog.Logger
	// Metrics, when set, counts every request and serves GET /metrics
	// (unless MetricsSeparate: then another listener serves them).
	Metrics         *monitor.Metrics
	MetricsSeparate bool
	// Alerts, when set, gets every committed record.
	Alerts *monitor.Engine
	// AuditInfo, when set, serves the audit public key and HMAC routes.
	AuditKeys AuditKeys
	// AuthLimit throttles authentication failures per source; default
	// authlimit.New with its defaults.
	AuthLimit *authlimit.Limiter
	// Replica lists the replicas (GET /v1/sys/members); default: this
	// process alone, as on a single node.
	Replica replica.Replica
	// Vault places the Vault-compatible API (vault.go); zero: /v1/transit
	// and /v1/secret.
	Vault VaultMounts
	// AWSKMS names the partition, region and account of the AWS KMS
	// door's key ARNs, and the region requests are signed for (awskms.go);
	// zero fields take awskms.Config.WithDefaults.
	AWSKMS awskms.Config
}

// AuditKeys is what the audit routes need of the audit key.
type AuditKeys interface {
	HMAC(value string) string
	PublicKeyString() string
}

// Server is the REST API over a Sys.
type Server struct {
	sys   *sys.Sys
	authn Authenticator
	authz Authorizer
	audit audit.Recorder
	log   *slog.Logger
	mux   *http.ServeMux

	metrics   *monitor.Metrics
	alerts    *monitor.Engine
	auditKeys AuditKeys
	limit     *authlimit.Limiter
	bodies    *bodyBudget
	replica   replica.Replica
	waits     *waitGate // secret waits in flight (secrets_wait.go)
	vault     VaultMounts
	setupErr  error // a configuration New refused (Err)
	aws       awsKMSDoor
	sts       awsSTSDoor

	ridPrefix string
	ridSeq    atomic.Uint64
}

// New builds the API server.
func New(s *sys.Sys, opts Options) *Server {
	srv := &Server{sys: s, authn: opts.Authenticator, authz: opts.Authorizer, audit: opts.Audit, log: opts.Logger, mux: http.NewServeMux(),
		metrics: opts.Metrics, alerts: opts.Alerts, auditKeys: opts.AuditKeys, limit: opts.AuthLimit, bodies: newBodyBudget(),
		replica: opts.Replica}
	if srv.authn == nil {
		srv.authn = Credentials{Tokens: s.Tokens, IAM: s.IAM}
	}
	if srv.authz == nil {
		srv.authz = s.IAM
	}
	if srv.limit == nil {
		srv.limit = authlimit.New(authlimit.Config{})
	}
	if srv.audit == nil {
		srv.audit = audit.Nop{}
	}
	if srv.log == nil {
		srv.log = slog.Default()
	}
	var p [4]byte
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
	srv.ridPrefix = hex.EncodeToString(p[:]) + "-"
	srv.routes()
	srv.setupErr = srv.vaultRoutes(opts.Vault)
	srv.awsKMSRoutes(opts.AWSKMS)
	srv.awsSTSRoutes()
	s.OnSeal(awskms.ForgetSigners)
	if srv.metrics != nil && !opts.MetricsSeparate {
		srv.mux.Handle("GET /metrics", srv.metrics.Handler())
	}
	return srv
}

// Err is the configuration error New met (a Vault mount colliding with
// Coffer's routes); a server with one must not be served.
func (s *Server) Err() error { return s.setupErr }

// ServeHTTP implements http.Handler. Requests that match no route get a
// JSON error body like every other failure (the mux alone answers in plain
// text): 404 not_found for an unknown path, 405 method_not_allowed (with
// the Allow header) for a known path and the wrong method, and 400
// invalid_path for a path with dot segments or doubled slashes (the mux
// would redirect it, unrecorded, to its clean form).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		if p := r.URL.EscapedPath(); cleanPath(p) != p || cleanPath(r.URL.Path) != r.URL.Path {
			s.unrouted(w, r, http.StatusBadRequest, "invalid_path",
				fmt.Sprintf("the path %q is not canonical (it has . or .. segments or doubled slashes); send %q", p, cleanPath(p)), "")
			return
		}
	}
	if isAWSRequest(r) {
		s.awsKMS(w, r) // the AWS KMS door: POST / with X-Amz-Target (awskms.go)
		return
	}
	if isSTSRequest(r) {
		s.awsSTS(w, r) // the AWS STS door: POST / with a form (awssts.go)
		return
	}
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// No pattern: the mux would answer 404 or 405. Let it decide which,
	// into a recorder, and answer in JSON.
	sr := &statusRecorder{h: http.Header{}}
	s.mux.ServeHTTP(sr, r)
	if sr.status == http.StatusMethodNotAllowed {
		allow := sr.h.Get("Allow")
		s.unrouted(w, r, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, allow), allow)
		return
	}
	hint := "the API lives under /v1 (see docs/api.md)"
	if strings.Contains(r.URL.Path, "/alias/") {
		hint = "an alias in a path must have its / escaped: alias%2FNAME"
	}
	s.unrouted(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("no API route %s %s; %s", r.Method, r.URL.Path, hint), "")
}

// unrouted answers and audits a request no route takes.
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request, status int, code, msg, allow string) {
	st := reqState{id: s.ridPrefix + strconv.FormatUint(s.ridSeq.Add(1), 10), start: time.Now()}
	w.Header().Set("X-Request-Id", st.id)
	// Audited like every request (probing leaves a trace), with the method
	// but not the path, which may hold anything the caller typed.
	rec := audit.Record{Time: st.start.UTC(), RequestID: st.id, Door: doorOf(r), Source: sourceOf(r), Action: unknownRoute,
		Principal: audit.Principal{Kind: "anonymous"}, Detail: truncateMethod(r.Method), Outcome: "error", ErrorCode: code, Status: status}
	if tok, _ := presentedToken(r); tok != "" {
		rec.Token = tok // the trail stores only its HMAC
	}
	vault := s.vaultAsks(r)
	if vault {
		// A Vault client on a path of its mounts, or one that sent its
		// token: answered as Vault would (vault.go).
		rec.Door = doorVault
		if tok := r.Header.Get(vaultTokenHeader); tok != "" && rec.Token == "" {
			rec.Token = tok
		}
	}
	rec.LatencyNS = int64(time.Since(st.start))
	if aerr := s.audit.Record(context.WithoutCancel(r.Context()), &rec); aerr != nil {
		s.auditFailed(w, r, st, route{action: unknownRoute}, &rec, aerr)
		return
	}
	s.observe(&rec, st.start)
	if allow != "" {
		w.Header().Set("Allow", allow)
	}
	if vault {
		writeJSON(w, status, vaultErrors(boundString(msg, maxMessage)))
		return
	}
	writeJSON(w, status, errorBody(code, boundString(msg, maxMessage), st.id))
}

// cleanPath is the canonical form of an escaped URL path, as the mux
// computes it: "." and ".." segments resolved, slashes single, a trailing
// slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// unknownRoute is the audit action of a request no route matched.
const unknownRoute = "api:UnknownRoute"

// truncateMethod bounds the method a client sent (any token is allowed).
func truncateMethod(m string) string {
	if len(m) > 16 {
		return m[:16]
	}
	return m
}

// statusRecorder captures the status and headers of the mux's own 404 and
// 405 answers and discards their plain-text body.
type statusRecorder struct {
	h      http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.h }
func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}

// Credentials authenticates with a bearer token ("Authorization: Bearer
// <token>" or "X-Coffer-Token") or an access key ("Authorization: Basic"
// with the key id as user and the secret as password).
type Credentials struct {
	Tokens *auth.Tokens
	IAM    *iam.Service
}

// Authenticate implements Authenticator.
func (c Credentials) Authenticate(r *http.Request, src netip.Addr) (auth.Principal, error) {
	if h := r.Header.Get("Authorization"); len(h) > 6 && strings.EqualFold(h[:6], "Basic ") {
		id, secret, ok := r.BasicAuth()
		if !ok || c.IAM == nil {
			return auth.Principal{}, fmt.Errorf("%w: Basic credentials must be base64(ACCESS_KEY_ID:SECRET)", auth.ErrUnauthenticated)
		}
		return c.IAM.AuthenticateAccessKey(id, secret, src)
	}
	tok, ok := presentedToken(r)
	if !ok {
		return auth.Principal{}, fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\" or \"Basic\" with an access key", auth.ErrUnauthenticated)
	}
	return c.Tokens.Lookup(tok, src)
}

// presentedToken is the bearer token of a request; ok is false for an
// Authorization header of another scheme.
func presentedToken(r *http.Request) (string, bool) {
	tok := r.Header.Get("X-Coffer-Token")
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, v, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		tok = strings.TrimSpace(v)
	}
	return tok, true
}

// relaxedAction reports whether action's successful outcome record may
// wait for its fsync with audit.durability batched: an operation that
// changes nothing and reveals no stored secret (docs/audit.md,
// "Durability"). Failures, denials, changes and reads of secrets stay
// durable before the answer.
func relaxedAction(action string) bool {
	switch action {
	case "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt", "kms:GenerateRandom":
		return true
	}
	return false
}

// noContent is the response type of routes that answer 204.
type noContent struct{}

// empty is the request type of routes without a body.
type empty struct{}

// route describes how handle treats one endpoint.
type route struct {
	action   string
	public   bool // no authentication (sys status, init, unseal)
	sealedOK bool // served while sealed
	created  bool // 201 instead of 200
	limit    int64
	login    bool // exchanges a credential: throttled per source and principal before work
	// loginKey names the principal a login claims (unverified), for the
	// failure budget of (source, principal); "" when unknown.
	loginKey func(r *http.Request, req any) string
	// selfAuthz: the call authorizes the request in full itself (every
	// batch item with its own key and context; both keys of a ReEncrypt),
	// so handle only pre-authorizes the action (see kms.go).
	selfAuthz bool
	// oneTime: a successful answer holds secrets shown exactly once (new
	// shares, a root token) of a change that has happened: it is sent
	// even when the outcome record then fails (the intent record is
	// written), since withholding it would lose the store.
	oneTime bool
	// door is the compatible API a route belongs to ("" for Coffer's
	// own): its requests are audited under that door and its errors
	// answered in that API's shape and statuses (vault.go).
	door string
}

// call is the service step of a route: it gets the decoded request and
// returns the response and the resource acted on (for audit).
type call[Req, Resp any] func(ctx context.Context, r *http.Request, p auth.Principal, req *Req) (Resp, error)

// resourceOf names the resource a request acts on, for authorization and
// audit, from the path and the decoded request.
type resourceOf[Req any] func(r *http.Request, req *Req) string

// reqState is what handle knows of one request, for the log and the audit.
type reqState struct {
	id    string
	start time.Time
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// releaseBuf wipes an encode buffer and puts it back in bufPool: an
// answer may hold plaintext (a data key, a private key, a secret), which
// would otherwise stay in the pooled buffer until another answer
// overwrote it. The answer was written first: the ResponseWriter holds
// its own copy.
func releaseBuf(buf *bytes.Buffer) {
	b := buf.Bytes() // nothing is read from it: this is the whole array
	clear(b[:cap(b)])
	buf.Reset()
	bufPool.Put(buf)
}

// handle builds the handler of one route. It is the only path a request
// takes through the server.
func handle[Req, Resp any](s *Server, rt route, res resourceOf[Req], fn call[Req, Resp]) http.HandlerFunc {
	if rt.limit == 0 {
		rt.limit = MaxBody
		if rt.public {
			// Anonymous bodies (init, unseal, logins) are tiny: bounded
			// below the large-body budget, so callers without any
			// credential never hold a share of it.
			rt.limit = smallBody
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		// One key pin table per request: the aliases its decisions
		// resolve are the keys its operation uses (keys.WithPins).
		r = r.WithContext(keys.WithPins(r.Context()))
		st := reqState{id: s.ridPrefix + strconv.FormatUint(s.ridSeq.Add(1), 10), start: time.Now()}
		w.Header().Set("X-Request-Id", st.id)
		src := sourceAddr(r)
		rec := audit.Record{Time: st.start.UTC(), RequestID: st.id, Door: doorOf(r), Source: sourceOf(r), Action: rt.action,
			Principal: audit.Principal{Kind: "anonymous"}}
		if rt.door != "" {
			rec.Door = rt.door
		}
		if tok, _ := presentedToken(r); tok != "" {
			rec.Token = tok // the trail stores only its HMAC
		}

		var p auth.Principal
		var req Req
		var loginKey string // the principal a login claims, for its failure budget
		bodyRead := false   // the AWS KMS door reads the body before authentication
		release := func() {}
		defer func() { release() }()
		err := func() error {
			if !rt.sealedOK && s.sys.Sealed() {
				if st, err := s.sys.Barrier.Status(r.Context()); err == nil && !st.Initialized {
					return &apiError{http.StatusServiceUnavailable, "not_initialized", "the server is not initialized; run `coffer operator init`"}
				}
				return &apiError{http.StatusServiceUnavailable, "sealed", "the server is sealed; unseal it with `coffer operator unseal`"}
			}
			if !rt.public || rt.login {
				// A replica that cannot prove it has seen every
				// revocation made on the others serves no credential
				// and issues none (internal/sys, follow.go).
				if err := s.sys.Fresh(); err != nil {
					return err
				}
			}
			if !rt.public {
				var err error
				if rt.door == doorAWSKMS || rt.door == doorAWSSTS {
					// A signature covers the body: it is read first, within
					// the route's limit and the large-body budget, before
					// anything is verified (awskms.go).
					done, body, berr := s.readBody(w, r, rt.limit)
					if berr != nil {
						return berr
					}
					release, bodyRead = done, true
					p, err = s.awsAuthenticate(r, src, body)
				} else {
					p, err = s.authn.Authenticate(r, src)
				}
				if err != nil {
					var leaked *auth.LeakedError
					if errors.As(err, &leaked) {
						rec.Principal.Accessor, rec.CredentialLeaked = leaked.Accessor, true
					}
					if who := (*auth.AttributedError)(nil); errors.As(err, &who) {
						// A well-formed access key id names who failed.
						rec.Principal.Kind, rec.Principal.ID, rec.Principal.Accessor = who.Kind, who.ID, who.ID
					}
					if th, retry := s.limit.Failure(src); th {
						return fmt.Errorf("%w (%w)", throttled(retry), err)
					}
					return err
				}
				rec.Principal = principalOf(&p)
				// A caller that no policy allows this action on any
				// resource is refused before a large body is read (a
				// small one is read: its refusal then names the
				// resource), and always on a route that authorizes its
				// items itself (batches).
				if pa, ok := s.authz.(PreAuthorizer); ok && (largeBody(r) || rt.selfAuthz) {
					if err := pa.PreAuthorize(&p, rt.action); err != nil {
						return err
					}
				}
			}
			if _, isEmpty := any(&req).(*empty); !isEmpty {
				if !bodyRead {
					done, err := s.bodies.acquire(r, rt.limit)
					if err != nil {
						return err
					}
					release = done
				}
				if err := decodeBody(w, r, &req, rt.limit); err != nil {
					if rt.door == doorAWSKMS {
						return awsSerialization(err)
					}
					return err
				}
				// Contexts over the limits are refused before they reach
				// the record (which holds only bounded ones).
				if err := checkContexts(&req); err != nil {
					return err
				}
				rec.ContextValues = contextOf(&req)
			}
			// Authorization sees the whole resource; only the record's
			// copy is bounded (a cut name could match another pattern).
			var resource string
			if res != nil {
				resource = res(r, &req)
				rec.Resource = auditResource(resource)
			}
			if rt.login {
				// Logins may cost a call to the apiserver: a (source,
				// principal) pair or a source over its failure budget
				// gets nothing verified (internal/authlimit).
				if rt.loginKey != nil {
					loginKey = rt.loginKey(r, &req)
				}
				if th, retry := s.limit.LoginThrottled(src, loginKey); th {
					return throttled(retry)
				}
			}
			if !rt.public && !rt.selfAuthz {
				q := policy.Request{Action: rt.action, Resource: resource, Context: rec.ContextValues, SourceIP: src, Time: st.start}
				if err := s.authz.Authorize(r.Context(), &p, &q); err != nil {
					return err
				}
			}
			return nil
		}()
		if rt.login && err != nil && !errors.Is(err, errThrottled) {
			if status, _, _ := classify(err); status == http.StatusUnauthorized || status == http.StatusForbidden {
				s.limit.LoginFailure(src, loginKey)
			}
		}
		if err == nil && mutates(r, rt.action) {
			// A state change is recorded before it happens: if the trail
			// cannot write, nothing changes.
			intent := rec
			intent.Phase = audit.PhaseIntent
			intent.ContextValues = rec.ContextValues
			if aerr := s.audit.Record(r.Context(), &intent); aerr != nil {
				if !clientGone(r, aerr) {
					s.auditFailed(w, r, st, rt, &rec, aerr)
					return
				}
				// The client hung up before the change was recorded:
				// nothing changes, and that is what the record says. The
				// trail is healthy; this is no audit failure.
				s.log.Info("the client closed the request before its change was recorded; nothing changed", "request_id", st.id, "action", rt.action)
				err = fmt.Errorf("the client closed the request before it was recorded: %w", aerr)
			} else {
				rec.Token, rec.ContextValues, rec.TokenHMAC, rec.Context = intent.Token, intent.ContextValues, intent.TokenHMAC, intent.Context
			}
		}
		var resp Resp
		if err == nil {
			resp, err = fn(withRecord(r.Context(), &rec), r, p, &req) // the call may add to its record (kms.go)
			// The request is done with: its plaintexts are wiped and the
			// rest left to the collector while the answer is written.
			wipeRequest(&req)
			req = *new(Req)
			if rt.login && err != nil {
				if status, _, _ := classify(err); status == http.StatusUnauthorized || status == http.StatusForbidden {
					s.limit.LoginFailure(src, loginKey)
				}
			} else if rt.login {
				s.limit.LoginSuccess(src, loginKey)
			}
		}
		status, code, msg := http.StatusOK, "", ""
		awsType := "" // the AWS error type of an AWS KMS door's failure
		switch {
		case err != nil:
			status, code, msg = classify(err)
			if rt.door == doorVault {
				status = vaultStatus(status)
			}
			if rt.door == doorAWSKMS {
				status, awsType = awsError(err, status, code)
			}
			if rt.door == doorAWSSTS {
				status, awsType = stsError(err, status, code)
			}
			rec.Outcome, rec.ErrorCode = "error", code
			if status >= 500 && code != "sealed" && code != "busy" {
				s.log.Error("request failed", "request_id", st.id, "action", rt.action, "error", err)
			}
		case rt.created:
			status = http.StatusCreated
		}
		if err == nil {
			rec.Outcome = "ok"
			keyOf(&rec, resp)
			if _, ok := any(resp).(noContent); ok {
				status = http.StatusNoContent
			}
		}
		rec.Status = status
		rec.LatencyNS = int64(time.Since(st.start))
		rec.Relaxed = err == nil && rec.Phase == audit.PhaseDone && !mutates(r, rt.action) && relaxedAction(rt.action)
		// Not cut short when the client goes away: the request's effect
		// (a change after its intent record) must still get its outcome.
		if aerr := s.audit.Record(context.WithoutCancel(r.Context()), &rec); aerr != nil {
			if !rt.oneTime || err != nil {
				s.auditFailed(w, r, st, rt, &rec, aerr)
				return
			}
			s.log.Error("the outcome record of a change whose answer is shown only once failed; answering anyway (its intent is recorded)",
				"request_id", st.id, "action", rt.action, "error", aerr)
			if s.metrics != nil {
				s.metrics.AuditFailed()
			}
		}
		s.observe(&rec, st.start)
		if err != nil {
			var th *throttleError
			if errors.As(err, &th) {
				w.Header().Set("Retry-After", strconv.Itoa(int(th.retry/time.Second)))
			}
			if code == "busy" {
				w.Header().Set("Retry-After", "1")
			}
			if rt.door == doorVault {
				writeJSON(w, status, vaultErrors(boundString(msg, maxMessage)))
				return
			}
			if rt.door == doorAWSKMS {
				writeAWSError(w, status, awsType, boundString(msg, maxMessage), st.id)
				return
			}
			if rt.door == doorAWSSTS {
				writeSTSError(w, status, awsType, boundString(msg, maxMessage), st.id)
				return
			}
			body := errorBody(code, boundString(msg, maxMessage), st.id)
			errorDetail(err, &body.Error)
			writeJSON(w, status, body)
			return
		}
		if rt.door == doorAWSKMS {
			writeAWS(w, status, resp, st.id)
			return
		}
		if rt.door == doorAWSSTS {
			writeSTS(w, status, resp, st.id)
			return
		}
		if status == http.StatusNoContent {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		switch v := any(resp).(type) {
		case client.BatchEncryptResponse:
			writeResults(w, status, v.Results)
			return
		case client.BatchDecryptResponse:
			writeResults(w, status, v.Results)
			return
		}
		writeJSON(w, status, resp)
	}
}

// clientGone reports whether a record failed only because the client
// closed its request (the trail refuses records whose context is done),
// not because the trail cannot write.
func clientGone(r *http.Request, aerr error) bool {
	return r.Context().Err() != nil && (errors.Is(aerr, context.Canceled) || errors.Is(aerr, context.DeadlineExceeded))
}

// auditFailed refuses a request whose record could not be written: no
// record, no effect.
func (s *Server) auditFailed(w http.ResponseWriter, _ *http.Request, st reqState, rt route, rec *audit.Record, aerr error) {
	s.log.Error("audit record failed; refusing the request", "request_id", st.id, "action", rt.action, "error", aerr)
	if s.metrics != nil {
		rec.Outcome, rec.ErrorCode = "error", "audit_unavailable"
		s.metrics.ObserveRequest(rec, time.Since(st.start))
	}
	const msg = "the audit trail cannot record this request, so it was refused; retry later"
	if rt.door == doorVault {
		writeJSON(w, http.StatusServiceUnavailable, vaultErrors(msg))
		return
	}
	if rt.door == doorAWSKMS {
		writeAWSError(w, http.StatusServiceUnavailable, "KMSInternalException", msg, st.id)
		return
	}
	if rt.door == doorAWSSTS {
		writeSTSError(w, http.StatusServiceUnavailable, "ServiceUnavailable", msg, st.id)
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, errorBody("audit_unavailable", msg, st.id))
}

// observe feeds a committed record to the metrics and the alert engine.
func (s *Server) observe(rec *audit.Record, start time.Time) {
	if s.metrics != nil {
		s.metrics.ObserveRequest(rec, time.Since(start))
	}
	if s.alerts != nil && !s.alerts.Feed(rec) && s.metrics != nil {
		s.metrics.Dropped("alert_engine", 1)
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if r.Method == http.MethodGet || r.Method == http.MethodDelete {
		return nil
	}
	body := &shapeReader{r: http.MaxBytesReader(w, r.Body, limit)}
	if b, ok := v.(objectBounded); ok {
		body.maxObject, body.objectWhy = b.jsonObjectBound()
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, v, limit)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var big *http.MaxBytesError
		if errors.As(err, &big) {
			return decodeError(err, v, limit)
		}
		return badRequest("the request body has data after the JSON object; send exactly one object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer releaseBuf(buf)
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":"internal","message":"response encoding failed"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// sourceAddr is the caller's address; the zero Addr when it is not an IP
// (a Unix socket).
func sourceAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
