package server

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/secrets"
)

// Limits of POST /v1/secrets/wait.
const (
	// MaxSecretWaits bounds the waits one server holds at once; a wait
	// beyond it is refused with 503 busy and Retry-After.
	MaxSecretWaits = 4096
	// MaxSecretWaitNames bounds the names the waits of one server hold
	// at once (each costs an entry in the secrets service's waiter index
	// for the whole wait); a wait beyond it is refused like one beyond
	// MaxSecretWaits.
	MaxSecretWaitNames = 1 << 18
	// waitSlack is how long past its wait an answer may take to be
	// written (the connection's deadlines are extended by wait + slack).
	waitSlack = 15 * time.Second
	// waitCheckEvery is how often a blocked wait checks that its caller's
	// credential is still valid (revoked or expired: 401).
	waitCheckEvery = time.Second
)

// waitUnextended bounds a wait when the connection's deadlines cannot be
// extended: below the server's write timeout (60s). A variable for tests.
var waitUnextended = 45 * time.Second

// waitGate counts the waits in flight and ends them all on shutdown.
type waitGate struct {
	n, names      atomic.Int64
	max, maxNames int64
	done          context.Context
	cancel        context.CancelFunc
	once          sync.Once
}

func newWaitGate(max int64) *waitGate {
	done, cancel := context.WithCancel(context.Background())
	return &waitGate{max: max, maxNames: MaxSecretWaitNames, done: done, cancel: cancel}
}

// errWaitsBusy refuses a wait beyond MaxSecretWaits.
var errWaitsBusy = &apiError{http.StatusServiceUnavailable, "busy",
	"this server holds the most secret waits it serves at once (" + strconv.Itoa(MaxSecretWaits) + "); retry after a second or use another replica"}

// errWaitSealed ends the waits of a server that seals (before their reads
// fail, or their credential check, as the seal wipes the tokens).
var errWaitSealed = &apiError{http.StatusServiceUnavailable, "sealed", "the server was sealed during the wait; unseal it with `coffer operator unseal`, or wait on another replica"}

// errWaitNamesBusy refuses a wait beyond MaxSecretWaitNames.
var errWaitNamesBusy = &apiError{http.StatusServiceUnavailable, "busy",
	"this server's waits hold the most secret names it serves at once (" + strconv.Itoa(MaxSecretWaitNames) + "); retry after a second or use another replica"}

// EndWaits ends every secret wait in flight (each answers at once with no
// change, and the caller waits again, on another replica if this one is
// gone) and makes later ones answer at once. Run registers it with the
// HTTP server's shutdown, so a long-poll does not hold a graceful shutdown.
func (s *Server) EndWaits() {
	if s.waits != nil {
		s.waits.once.Do(s.waits.cancel)
	}
}

// secretWaitRequest is the body of a wait: its secrets object may hold up
// to secrets.MaxWaitNames members, more than other request objects.
type secretWaitRequest struct {
	client.SecretWaitRequest
}

func (*secretWaitRequest) jsonObjectBound() (int, string) {
	return secrets.MaxWaitNames, "a wait names 1 to " + strconv.Itoa(secrets.MaxWaitNames) + " secrets"
}

// controllerKey passes a request's http.ResponseController to the wait
// route, which extends the connection's deadlines past its wait.
type controllerKey struct{}

// secretWaitRoutes serve POST /v1/secrets/wait (docs/api.md, "Waiting for
// new versions"): a long-poll on the current version of up to 1000
// secrets. Each name needs secret:List on secret/NAME; names the caller
// may not list are answered in denied (whether they exist or not) and not
// waited on. One record per call names every secret asked for.
func (s *Server) secretWaitRoutes() {
	s.waits = newWaitGate(MaxSecretWaits)
	h := handle(s, route{action: "secret:List", selfAuthz: true}, nil, s.secretWait)
	s.mux.HandleFunc("POST /v1/secrets/wait", func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), controllerKey{}, http.NewResponseController(w))
		h(w, r.WithContext(ctx))
	})
}

func (s *Server) secretWait(ctx context.Context, r *http.Request, p auth.Principal, req *secretWaitRequest) (client.SecretWaitResult, error) {
	if err := s.preAuthorize(&p, "secret:List"); err != nil {
		return client.SecretWaitResult{}, err
	}
	if n := len(req.Secrets); n == 0 || n > secrets.MaxWaitNames {
		return client.SecretWaitResult{}, badRequest("secrets: name 1 to %d secrets with the current version you hold, not %d", secrets.MaxWaitNames, n)
	}
	wait := secrets.DefaultWait
	if req.Wait != "" {
		d, err := time.ParseDuration(req.Wait)
		if err != nil || d <= 0 || d > secrets.MaxWait {
			return client.SecretWaitResult{}, badRequest("wait %q: want a positive duration up to 5m, like 50s", boundString(req.Wait, 32))
		}
		wait = d
	}
	names := make([]string, 0, len(req.Secrets))
	for n := range req.Secrets {
		if err := secrets.CheckName(n); err != nil {
			return client.SecretWaitResult{}, err
		}
		names = append(names, n)
	}
	slices.Sort(names)

	out := client.SecretWaitResult{Changed: []client.SecretChange{}, Denied: []string{}}
	permitted := make(map[string]uint32, len(names))
	var deniedCode string
	for _, n := range names {
		if err := s.authorizeItem(ctx, r, &p, "secret:List", "secret/"+n, nil); err != nil {
			_, deniedCode, _ = classify(err)
			out.Denied = append(out.Denied, n)
		} else {
			permitted[n] = req.Secrets[n]
		}
	}
	defer func() { recordWait(ctx, wait, names, permitted, &out, deniedCode) }()

	var changed []secrets.Change
	var err error
	if len(out.Denied) > 0 {
		// Answered at once: the caller drops the denied names. What
		// already differs among the others is reported with them.
		if len(permitted) > 0 {
			changed, err = s.sys.Secrets.Changed(ctx, permitted)
		}
	} else {
		changed, err = s.blockingWait(ctx, r, permitted, wait)
		// The caller's policies may have changed during the wait: a
		// secret it may no longer list is answered as denied, without
		// its version.
		kept := changed[:0]
		for _, c := range changed {
			if aerr := s.authorizeItem(ctx, r, &p, "secret:List", "secret/"+c.Name, nil); aerr != nil {
				_, deniedCode, _ = classify(aerr)
				out.Denied = append(out.Denied, c.Name)
				delete(permitted, c.Name)
				continue
			}
			kept = append(kept, c)
		}
		changed = kept
	}
	if err != nil {
		return client.SecretWaitResult{}, err
	}
	for _, c := range changed {
		out.Changed = append(out.Changed, client.SecretChange{Name: c.Name, CurrentVersion: c.CurrentVersion, Deleted: c.Deleted})
	}
	return out, nil
}

// maxWaitRecorded bounds the names a wait's record lists besides the
// denied and the changed ones (all of which it lists): a controller
// waiting on 1000 secrets every 30s would otherwise write each name twice
// a minute. GET /v1/secrets records its prefix, not the names it shows.
const maxWaitRecorded = 64

// recordWait fills a wait's audit record: the counts in detail, and as
// items every denied name (with its error code), every changed one, and
// the other names asked for up to maxWaitRecorded items.
func recordWait(ctx context.Context, wait time.Duration, names []string, permitted map[string]uint32, out *client.SecretWaitResult, deniedCode string) {
	rec := recordOf(ctx)
	if rec == nil {
		return
	}
	rec.Detail = "wait=" + wait.String() + " secrets=" + strconv.Itoa(len(names)) + " denied=" + strconv.Itoa(len(out.Denied)) +
		" changed=" + strconv.Itoa(len(out.Changed))
	for _, n := range out.Denied {
		rec.AddItem(audit.Item{Resource: "secret/" + n, Outcome: "error", ErrorCode: deniedCode})
	}
	changed := make(map[string]bool, len(out.Changed))
	for _, c := range out.Changed {
		changed[c.Name] = true
		rec.AddItem(audit.Item{Resource: "secret/" + c.Name, Outcome: "ok"})
	}
	for _, n := range names {
		if len(rec.Items) >= maxWaitRecorded {
			break
		}
		if _, ok := permitted[n]; ok && !changed[n] {
			rec.AddItem(audit.Item{Resource: "secret/" + n, Outcome: "ok"})
		}
	}
}

// blockingWait runs one wait within the server's bound on concurrent
// waits, until a change, the end of wait, the server's shutdown, or the
// caller's credential failing.
func (s *Server) blockingWait(ctx context.Context, r *http.Request, known map[string]uint32, wait time.Duration) ([]secrets.Change, error) {
	if s.waits.n.Add(1) > s.waits.max {
		s.waits.n.Add(-1)
		return nil, errWaitsBusy
	}
	defer s.waits.n.Add(-1)
	names := int64(len(known))
	if s.waits.names.Add(names) > s.waits.maxNames {
		s.waits.names.Add(-names)
		return nil, errWaitNamesBusy
	}
	defer s.waits.names.Add(-names)
	if rc, ok := ctx.Value(controllerKey{}).(*http.ResponseController); ok {
		// The server's read and write timeouts would end the request
		// (and cancel its context) before a long wait; this one
		// connection gets until the wait ends, and a little more.
		until := time.Now().Add(wait + waitSlack)
		if rc.SetReadDeadline(until) != nil || rc.SetWriteDeadline(until) != nil {
			wait = min(wait, waitUnextended)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	stop := context.AfterFunc(s.waits.done, cancel)
	defer stop()
	src := sourceAddr(r)
	check := func() error {
		if s.sys.Sealed() {
			return errWaitSealed
		}
		// A replica that cannot prove it sees every revocation made on
		// the others serves no credential (follow.go): nor a wait.
		if err := s.sys.Fresh(); err != nil {
			return err
		}
		// A revoked or expired credential ends the wait (401).
		_, err := s.authn.Authenticate(r, src)
		return err
	}
	return s.sys.Secrets.Wait(wctx, known, secrets.WaitOptions{Check: check, CheckEvery: waitCheckEvery})
}
