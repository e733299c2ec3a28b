package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/webhooksig"
)

// Rotation limits and defaults.
const (
	// MinRotationEvery is the shortest rotation period.
	MinRotationEvery = time.Hour
	// DefaultWebhookTimeout bounds one webhook call.
	DefaultWebhookTimeout = 10 * time.Second
	// MaxWebhookResponse bounds the webhook's response body.
	MaxWebhookResponse = 64 << 10
	// MaxRetryDelay caps the backoff between failed attempts.
	MaxRetryDelay = time.Hour
	// firstRetryDelay is the delay after the first failure; each further
	// failure doubles it.
	firstRetryDelay = time.Minute
	// Generator bounds.
	DefaultRandomLength = 32
	MaxRandomLength     = 4096
	DefaultRandomField  = "password"
	maxWebhookURL       = 2048
	// maxWith leaves room for a webhook's generator options (a listed
	// charset of up to 94 characters, a field name) before its URL.
	maxWith      = maxWebhookURL + 512
	maxLastError = 512

	rotatePrefix = "secrets/rotate/"
)

// Rotation states.
const (
	RotationIdle    = "idle"
	RotationPending = "pending"
	RotationFailed  = "failed"
)

// Rotation results counted by RotationCounts.
const (
	ResultOK     = "ok"
	ResultFailed = "failed"
)

// ErrNoRotation: the secret has no rotation configuration.
var ErrNoRotation = errors.New("secret has no rotation configuration")

// ErrRotationPending: a write was refused because a rotation of the secret
// is in progress (its pending version is not promoted or rolled back yet).
var ErrRotationPending = errors.New("secret rotation pending")

// errRefusedAddress: a webhook's address is link-local, multicast or
// unspecified.
var errRefusedAddress = errors.New("the webhook's address is link-local, multicast or unspecified (such as a cloud metadata endpoint); Coffer does not call it")

// errNotLoopback: an http webhook's name resolved to an address that is
// not loopback.
var errNotLoopback = errors.New("the webhook's http URL resolves to an address that is not loopback; use https")

// loopbackOnly marks the context of a call to an http (not https)
// webhook: only loopback addresses may be dialled.
type loopbackOnly struct{}

// checkDialAddress vets the address a webhook call dials, after name
// resolution and before any packet is sent.
func checkDialAddress(ctx context.Context, address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return errRefusedAddress
	}
	ip := net.ParseIP(host)
	if ip == nil || refusedIP(ip) {
		return errRefusedAddress
	}
	// A NAT64 address (64:ff9b::/96) reaches the IPv4 address in its
	// last four bytes: 64:ff9b::a9fe:a9fe is 169.254.169.254.
	if nat64.Contains(ip) && refusedIP(net.IP(ip[12:16])) {
		return errRefusedAddress
	}
	if ctx.Value(loopbackOnly{}) != nil && !ip.IsLoopback() {
		return errNotLoopback
	}
	return nil
}

// nat64 is the well-known NAT64 prefix (RFC 6052).
var nat64 = &net.IPNet{IP: net.ParseIP("64:ff9b::"), Mask: net.CIDRMask(96, 128)}

// refusedIP: link-local, multicast or unspecified.
func refusedIP(ip net.IP) bool {
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified()
}

// ErrRotationFailed: a rotation step failed; current is untouched and the
// failure is recorded in the secret's rotation metadata.
var ErrRotationFailed = errors.New("secret rotation failed")

// charsets of the random generator.
var charsets = map[string]string{
	"alnum":           "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
	"hex":             "0123456789abcdef",
	"base64":          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
	"ascii-printable": "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
}

// rotationMeta is the rotation state stored in a secret's metadata.
type rotationMeta struct {
	Every       int64      `json:"every_seconds"`
	With        string     `json:"with"`
	NextAt      time.Time  `json:"next_at"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastRotated *time.Time `json:"last_rotated,omitempty"`
	// SigningKey signs a webhook rotation's calls (SigningKeySize random
	// bytes, inside the barrier like the rest of the metadata). A webhook
	// configuration stored before calls were signed has none: its calls
	// go unsigned until rotation is set again, which makes one.
	SigningKey []byte `json:"signing_key,omitempty"`
}

// SigningKeySize is the size of a webhook rotation's signing key.
const SigningKeySize = 32

// RotationInfo is a secret's rotation configuration and state.
type RotationInfo struct {
	Every       time.Duration
	With        string
	NextAt      time.Time
	State       string
	Attempts    int
	LastError   string
	LastRotated time.Time
	// Unsigned: a webhook rotation without a signing key (configured
	// before calls were signed); its calls carry no Coffer-Signature.
	Unsigned bool
	// NewSigningKey is set only in SetRotation's answer, when it made a
	// signing key: the one time the key leaves the server.
	NewSigningKey []byte
}

func (r *rotationMeta) info() *RotationInfo {
	if r == nil {
		return nil
	}
	ri := &RotationInfo{Every: time.Duration(r.Every) * time.Second, With: r.With, NextAt: r.NextAt, State: r.State,
		Attempts: r.Attempts, LastError: r.LastError, Unsigned: isWebhook(r.With) && len(r.SigningKey) == 0}
	if r.LastRotated != nil {
		ri.LastRotated = *r.LastRotated
	}
	return ri
}

// rotator is the Service's rotation machinery.
type rotator struct {
	timeout time.Duration
	// concurrency bounds the rotations RotateDue runs at once.
	concurrency int
	once        sync.Once
	client      *http.Client
	ok          atomic.Int64
	failed      atomic.Int64
	failing     atomic.Int64
	// failingAt is when failing was counted (unix nanoseconds).
	failingAt atomic.Int64
	// record, when set, records each rotation RotateDue runs.
	record atomic.Pointer[func(context.Context, RotationEvent) error]
}

// RotationEvent is a rotation the background job (RotateDue) runs, as
// given to the recorder set with SetRotationRecorder: names and version
// numbers, never a value.
type RotationEvent struct {
	Name string
	// Done is false for the record made before the rotation starts, true
	// for its outcome.
	Done bool
	// Current is the secret's current version when the rotation starts;
	// Pending the pending version it resumes (0: it makes a new one).
	Current, Pending uint32
	// Result and Err are the outcome (Done only).
	Result RotateResult
	Err    error
}

// SetRotationRecorder sets the recorder of the rotations RotateDue runs
// (the server's audit trail). Each rotation is recorded before it starts
// and again with its outcome; one whose first record fails is not run
// (fail closed), and a failed outcome record is part of RotateDue's error.
// Rotate (a request) is recorded by its caller, not here.
func (s *Service) SetRotationRecorder(f func(context.Context, RotationEvent) error) {
	if f == nil {
		s.rot.record.Store(nil)
		return
	}
	s.rot.record.Store(&f)
}

// errRotationNotRecorded: the rotation job did not rotate a secret because
// the recorder refused the record made before it.
var errRotationNotRecorded = errors.New("the rotation was not run: its audit record could not be written")

// rotateRecorded is one rotation of the job, recorded before it starts and
// after it ends. recErr is a failure to record the outcome (the rotation
// itself is in err).
func (s *Service) rotateRecorded(ctx context.Context, m *meta, rev int64) (res RotateResult, err, recErr error) {
	rp := s.rot.record.Load()
	if rp == nil {
		res, err = s.rotate(ctx, m, rev, nil)
		return res, err, nil
	}
	record := *rp
	ev := RotationEvent{Name: m.Name, Current: m.Current, Pending: m.Pending}
	if rerr := record(ctx, ev); rerr != nil {
		return RotateResult{}, fmt.Errorf("secret %q: %w: %w", m.Name, errRotationNotRecorded, rerr), nil
	}
	res, err = s.rotate(ctx, m, rev, nil)
	ev.Done, ev.Result, ev.Err = true, res, err
	// Recorded even when ctx ended during the rotation (leadership lost,
	// shutdown): its effects (a pending version, a webhook's apply) are
	// done, and a trail that refuses a cancelled context would lose them.
	if rerr := record(context.WithoutCancel(ctx), ev); rerr != nil {
		recErr = fmt.Errorf("secret %q: the audit record of its rotation's outcome could not be written: %w", m.Name, rerr)
	}
	return res, err, recErr
}

// failingFresh is how long a replica reports its last count of failing
// rotations: a replica that lost the job leadership stops running the job,
// and its count would otherwise stay forever.
const failingFresh = 5 * time.Minute

// WithWebhookTimeout sets the timeout of one webhook call (0: the
// default, DefaultWebhookTimeout).
func WithWebhookTimeout(d time.Duration) Option { return func(s *Service) { s.rot.timeout = d } }

func (r *rotator) httpClient() *http.Client {
	r.once.Do(func() {
		t := r.timeout
		if t <= 0 {
			t = DefaultWebhookTimeout
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil // the URL is the one validated, not a proxy's
		// Checked on the address actually dialled, after name resolution:
		// no cloud metadata endpoint (169.254.169.254) or other link-local
		// address, whatever name the URL gives.
		d := &net.Dialer{Timeout: t, ControlContext: func(ctx context.Context, _, address string, _ syscall.RawConn) error {
			return checkDialAddress(ctx, address)
		}}
		tr.DialContext = d.DialContext
		r.client = &http.Client{Timeout: t, Transport: tr,
			// A redirect is a failure: following it would send the call to
			// a URL nobody validated.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	})
	return r.client
}

// RotationCounts returns the rotations that succeeded and failed since the
// service started, and how many secrets' rotation was failing at this
// replica's last background run (0 when that run is older than 5 minutes:
// the job runs on the job leader only).
func (s *Service) RotationCounts() (ok, failed, failing int64) {
	if at := s.rot.failingAt.Load(); at != 0 && s.now().Sub(time.Unix(0, at)) <= failingFresh {
		failing = s.rot.failing.Load()
	}
	return s.rot.ok.Load(), s.rot.failed.Load(), failing
}

// ParseEvery parses a rotation period: a Go duration ("720h") or a whole
// number of days ("30d"), at least MinRotationEvery.
func ParseEvery(s string) (time.Duration, error) {
	d, err := keys.ParsePeriod(s)
	if err != nil {
		return 0, fmt.Errorf("%w: rotation period %q: want a duration like 30d or 12h", ErrInvalidArgument, s)
	}
	if d < MinRotationEvery {
		return 0, fmt.Errorf("%w: rotation period %q is shorter than the minimum, 1h", ErrInvalidArgument, s)
	}
	return d, nil
}

// generator is a parsed random: spec.
type generator struct {
	length int
	chars  string
	field  string
}

// defaultGenerator makes a webhook rotation's pending value.
var defaultGenerator = generator{length: DefaultRandomLength, chars: charsets["alnum"], field: DefaultRandomField}

// parseWith validates a rotation's "with": random:k=v,... or webhook:URL.
func parseWith(with string) (gen generator, hook string, err error) {
	if len(with) > maxWith {
		return generator{}, "", fmt.Errorf("%w: rotation with is %d bytes; at most %d", ErrInvalidArgument, len(with), maxWith)
	}
	kind, arg, _ := strings.Cut(with, ":")
	switch kind {
	case "random":
		gen, err = parseRandom(arg)
		return gen, "", err
	case "webhook":
		return parseWebhook(arg)
	}
	return generator{}, "", fmt.Errorf("%w: rotation with %q: want random:length=N,charset=alnum|hex|base64|ascii-printable|CHARS,field=NAME or webhook:URL or webhook:length=N,charset=...,field=NAME,url=URL", ErrInvalidArgument, boundString(with, 64))
}

// parseWebhook parses a webhook rotation's argument: a URL alone (the
// default generator), or the random: generator's options followed by
// url=URL, last because a URL may hold commas. An argument whose text
// before its first "=" holds "://" (or that has no "=") is a URL alone.
func parseWebhook(arg string) (generator, string, error) {
	opts, hook := "", arg
	if head, _, ok := strings.Cut(arg, "="); ok && !strings.Contains(head, "://") {
		if rest, ok := strings.CutPrefix(arg, "url="); ok {
			hook = rest
		} else if i := strings.Index(arg, ",url="); i >= 0 {
			opts, hook = arg[:i], arg[i+len(",url="):]
		} else {
			return generator{}, "", fmt.Errorf("%w: webhook rotation %q: want webhook:URL, or generator options then the URL last: webhook:length=N,charset=C,field=NAME,url=URL", ErrInvalidArgument, boundString(arg, 64))
		}
	}
	gen := defaultGenerator
	if opts != "" {
		var err error
		if gen, err = parseRandom(opts); err != nil {
			return generator{}, "", err
		}
	}
	if err := checkWebhookURL(hook); err != nil {
		return generator{}, "", err
	}
	return gen, hook, nil
}

func parseRandom(arg string) (generator, error) {
	g := defaultGenerator
	if arg == "" {
		return g, nil
	}
	for kv := range strings.SplitSeq(arg, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return g, fmt.Errorf("%w: random generator option %q: want key=value (length, charset, field)", ErrInvalidArgument, kv)
		}
		switch k {
		case "length":
			n, err := strconv.Atoi(v)
			if err != nil || n < 8 || n > MaxRandomLength {
				return g, fmt.Errorf("%w: random length %q: want 8 to %d", ErrInvalidArgument, v, MaxRandomLength)
			}
			g.length = n
		case "charset":
			if cs, ok := charsets[v]; ok {
				g.chars = cs
				continue
			}
			// Each character once: a repeated one would be drawn more
			// often (and the draw needs at most 256 of them).
			seen := map[byte]bool{}
			var chars []byte
			for i := 0; i < len(v); i++ {
				if v[i] < 0x21 || v[i] > 0x7e {
					return g, fmt.Errorf("%w: random charset has byte %d at %d; explicit charsets use printable ASCII without space", ErrInvalidArgument, v[i], i)
				}
				if !seen[v[i]] {
					seen[v[i]] = true
					chars = append(chars, v[i])
				}
			}
			if len(chars) < 2 {
				return g, fmt.Errorf("%w: random charset %q: name alnum, hex, base64 or ascii-printable, or list at least 2 distinct characters", ErrInvalidArgument, boundString(v, 64))
			}
			g.chars = string(chars)
		case "field":
			if err := checkFieldName(v); err != nil {
				return g, err
			}
			g.field = v
		default:
			return g, fmt.Errorf("%w: unknown random generator option %q (length, charset, field)", ErrInvalidArgument, k)
		}
	}
	// A value guessed in fewer than 2^64 tries is no secret, whatever
	// the system it goes to accepts.
	if bits := float64(g.length) * math.Log2(float64(len(g.chars))); bits < minRandomBits {
		return g, fmt.Errorf("%w: random generator of %d characters from %d gives %.0f bits; at least %d: a longer length or a larger charset", ErrInvalidArgument, g.length, len(g.chars), bits, minRandomBits)
	}
	return g, nil
}

// minRandomBits is the least entropy of a random generator's value.
const minRandomBits = 64

// checkWebhookURL accepts https URLs, and http only to a loopback address.
func checkWebhookURL(raw string) error {
	if len(raw) > maxWebhookURL {
		return fmt.Errorf("%w: the webhook URL is %d bytes; at most %d", ErrInvalidArgument, len(raw), maxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: the webhook URL does not parse as scheme://host/path", ErrInvalidArgument)
	}
	if u.User != nil {
		return fmt.Errorf("%w: the webhook URL carries credentials; they would be stored in the secret's metadata", ErrInvalidArgument)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
			return nil
		}
		return fmt.Errorf("%w: a webhook URL over http must name a loopback address (127.0.0.1, ::1 or localhost); use https", ErrInvalidArgument)
	}
	return fmt.Errorf("%w: webhook URL scheme %q: want https (or http to a loopback address)", ErrInvalidArgument, u.Scheme)
}

// generate draws g.length characters of g.chars uniformly (rejection
// sampling over random bytes).
func (g generator) generate() string {
	out := make([]byte, 0, g.length)
	n := len(g.chars)
	limit := 256 - 256%n
	buf := make([]byte, 64)
	for len(out) < g.length {
		rand.Read(buf)
		for _, b := range buf {
			if int(b) < limit && len(out) < g.length {
				out = append(out, g.chars[int(b)%n])
			}
		}
	}
	return string(out)
}

// RotationConfig configures a secret's rotation.
type RotationConfig struct {
	Every time.Duration
	With  string
	// RollSigningKey replaces a webhook rotation's signing key with a new
	// one (otherwise a webhook rotation set again keeps its key).
	RollSigningKey bool
}

// SetRotation configures a secret's rotation; the first one is due after
// Every (rotate at once with Rotate). A webhook rotation gets a signing key
// when it has none (or c.RollSigningKey asks for a new one); the answer's
// Rotation.NewSigningKey carries it, this once. A random: generator keeps
// no key.
func (s *Service) SetRotation(ctx context.Context, name string, c RotationConfig) (Metadata, error) {
	if c.Every < MinRotationEvery {
		return Metadata{}, fmt.Errorf("%w: the rotation period must be at least 1h, not %s", ErrInvalidArgument, c.Every)
	}
	if _, _, err := parseWith(c.With); err != nil {
		return Metadata{}, err
	}
	if c.RollSigningKey && !isWebhook(c.With) {
		return Metadata{}, fmt.Errorf("%w: only a webhook rotation has a signing key to roll, not %s", ErrInvalidArgument, boundString(c.With, 64))
	}
	var made []byte
	md, err := s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		made = nil
		if m.DeletedAt != nil {
			return nil, m.deletedErr()
		}
		r := m.Rotation
		if r == nil {
			r = &rotationMeta{State: RotationIdle}
		}
		if m.Pending != 0 && isWebhook(r.With) && !isWebhook(c.With) {
			// The webhook may have applied the pending version: as a
			// random: one it would be destroyed by a disable.
			return nil, fmt.Errorf("%w: secret %q has pending version %d from its webhook; retry the rotation or disable it (the version is kept) before a random: generator", ErrRotationPending, name, m.Pending)
		}
		r.Every, r.With = int64(c.Every/time.Second), c.With
		switch {
		case !isWebhook(c.With):
			r.SigningKey = nil
		case len(r.SigningKey) == 0 || c.RollSigningKey:
			made = make([]byte, SigningKeySize)
			rand.Read(made)
			r.SigningKey = made
		}
		if r.State != RotationFailed && m.Pending == 0 {
			r.NextAt = now.Add(c.Every)
		}
		m.Rotation = r
		return []storage.Op{storage.Put(rotatePrefix+name, []byte(r.NextAt.Format(time.RFC3339Nano)))}, nil
	})
	if err == nil && made != nil && md.Rotation != nil {
		md.Rotation.NewSigningKey = made
	}
	return md, err
}

// DisableRotation removes a secret's rotation configuration. A pending
// version (a rotation in progress or failed) is rolled back: the stage is
// cleared; current stays. A random generator's pending version is
// destroyed; a webhook's is kept (readable by its number), since the
// webhook may have applied it already (a failed test, a timeout after the
// apply): destroying it could leave the only working credential nowhere.
func (s *Service) DisableRotation(ctx context.Context, name string) (Metadata, error) {
	return s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		if m.Rotation == nil {
			return nil, fmt.Errorf("%w: secret %q has no rotation configuration to disable", ErrNoRotation, name)
		}
		webhook := isWebhook(m.Rotation.With)
		m.Rotation = nil
		ops := []storage.Op{storage.Delete(rotatePrefix + name)}
		if webhook {
			m.Pending = 0
			return ops, nil
		}
		return append(ops, m.rollback(now)...), nil
	})
}

// isWebhook reports whether a rotation's with names a webhook.
func isWebhook(with string) bool { return strings.HasPrefix(with, "webhook:") }

// rollback clears the pending stage and destroys its version.
func (m *meta) rollback(now time.Time) []storage.Op {
	if m.Pending == 0 {
		return nil
	}
	p := m.Pending
	m.Pending = 0
	if vm := m.find(p); vm != nil && vm.DestroyedAt == nil {
		t := now
		vm.DestroyedAt = &t
		return []storage.Op{storage.Delete(dataPath(m.Name, p))}
	}
	return nil
}

// RotateResult is a completed rotation.
type RotateResult struct {
	Name            string
	PreviousVersion uint32
	CurrentVersion  uint32
	// PendingVersion is the version being rotated to, also when the
	// rotation failed (then CurrentVersion is 0).
	PendingVersion uint32
	// Resumed: the rotation continued a pending version left by an
	// earlier attempt (a failure or a crash between phases).
	Resumed bool
}

// webhookCall is the body POSTed to a rotation webhook. It carries no
// value: the webhook reads the pending version with its own credential
// (secret:Read on the secret, stage pending).
type webhookCall struct {
	Secret     string `json:"secret"`
	OldVersion uint32 `json:"old_version"`
	NewVersion uint32 `json:"new_version"`
	Step       string `json:"step"`
}

// Rotate rotates a secret now, in three phases:
//
//  1. a pending version is written (the generator's value in its field,
//     the other fields copied from current) without becoming current;
//  2. a webhook is asked to apply it and then to test it (random: nothing
//     to apply);
//  3. it is promoted in one write: previous = current, current = pending.
//
// Each phase's write is conditional on the metadata revision read before
// it, so two replicas (or a deposed job leader) cannot both rotate: the
// loser's write fails with storage.ErrConflict and nothing of it stays.
// A secret that already has a pending version resumes at phase 2 with it
// (the webhook must be idempotent: it is called again with the same
// versions). A failed phase 2 leaves current untouched, keeps the pending
// version for the retry, and records the failure (state failed, attempts,
// next retry with exponential backoff up to MaxRetryDelay).
func (s *Service) Rotate(ctx context.Context, name string) (RotateResult, error) {
	if err := CheckName(name); err != nil {
		return RotateResult{}, err
	}
	m, rev, err := s.load(ctx, name)
	if err != nil {
		return RotateResult{}, err
	}
	if m.DeletedAt != nil {
		return RotateResult{}, m.deletedErr()
	}
	if m.Rotation == nil {
		return RotateResult{}, fmt.Errorf("%w: secret %q has no rotation configuration; set one with a period and random:... or webhook:URL", ErrNoRotation, name)
	}
	res, err := s.rotate(ctx, m, rev, nil)
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		return res, err
	}
	if errors.Is(err, storage.ErrConflict) {
		return res, fmt.Errorf("%w: secret %q changed during its rotation (another rotation or write); read it again", ErrConflict, name)
	}
	return res, nil
}

// rotate runs the phases on m (read at rev). stopAfter, in tests, stops
// after a phase (as a crash would).
func (s *Service) rotate(ctx context.Context, m *meta, rev int64, stopAfter func(phase int) bool) (RotateResult, error) {
	gen, hook, err := parseWith(m.Rotation.With)
	if err != nil {
		return RotateResult{}, err
	}
	res := RotateResult{Name: m.Name, PreviousVersion: m.Current}
	old := m.Current
	n := m.Pending
	if n != 0 {
		res.Resumed = true
		if vm := m.find(n); vm == nil || vm.DestroyedAt != nil {
			// Nothing to resume with: roll back, and start over.
			if n, rev, err = s.rollbackAt(ctx, m, rev); err != nil {
				return res, err
			}
			res.Resumed = false
		} else if s.inProgress(m, s.now().UTC()) {
			// Another caller (the job, a replica, a manual rotate) may
			// be calling the webhook for this version right now.
			return res, fmt.Errorf("%w: secret %q: a rotation to version %d is in progress; retry in %s", ErrRotationPending, m.Name, n, s.rot.lease())
		} else if rev, err = s.claim(ctx, m, rev); err != nil {
			return res, err
		}
	}
	if n == 0 {
		if n, _, err = s.writePending(ctx, m, rev, gen); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				return res, err
			}
			s.rot.failed.Add(1)
			ferr := s.recordFailure(ctx, m.Name, 0, "create", err)
			return res, errors.Join(fmt.Errorf("%w: secret %q, step create: %s; current (version %d) is untouched", ErrRotationFailed, m.Name, err, old), ferr)
		}
	}
	res.PendingVersion = n
	if stopAfter != nil && stopAfter(1) {
		return res, nil
	}
	if hook != "" {
		for _, step := range []string{"apply", "test"} {
			if err := s.callWebhook(ctx, hook, m.Rotation.SigningKey, webhookCall{Secret: m.Name, OldVersion: old, NewVersion: n, Step: step}); err != nil {
				s.rot.failed.Add(1)
				ferr := s.recordFailure(ctx, m.Name, n, step, err)
				return res, errors.Join(fmt.Errorf("%w: secret %q, step %s: %s; current (version %d) is untouched", ErrRotationFailed, m.Name, step, err, old), ferr)
			}
		}
	}
	if err := s.promote(ctx, m.Name, old, n); err != nil {
		return res, err
	}
	s.rot.ok.Add(1)
	res.PreviousVersion, res.CurrentVersion = old, n
	return res, nil
}

// writePending is phase 1: a pending version, in one batch conditional on
// rev.
func (s *Service) writePending(ctx context.Context, m *meta, rev int64, gen generator) (uint32, int64, error) {
	cur, err := s.Get(ctx, m.Name, m.Current, "")
	if err != nil {
		return 0, 0, err
	}
	fields := cur.Fields
	fields[gen.field] = gen.generate()
	if err := checkFields(fields); err != nil {
		return 0, 0, err
	}
	plain := encodeFields(fields)
	defer clear(plain)
	now := s.now().UTC()
	n := m.Latest + 1
	dk, wrapped, err := s.dataKey(ctx, m.Key, encryptionContext(m.Name, n))
	if err != nil {
		return 0, 0, err
	}
	val, err := sealFields(dk, n, wrapped.Ciphertext, m.Name, plain)
	clear(dk)
	if err != nil {
		return 0, 0, err
	}
	m.Versions = append(m.Versions, versionMeta{Version: n, CreatedAt: now, KeyID: wrapped.KeyID, KeyVersion: wrapped.KeyVersion})
	m.Latest, m.Pending, m.UpdatedAt = n, n, now
	m.Rotation.State = RotationPending
	del := m.prune(now)
	mv, err := json.Marshal(m)
	if err != nil {
		return 0, 0, err
	}
	ops := []storage.Op{
		{Kind: storage.OpPut, Key: metaPrefix + m.Name, Value: mv, IfRevision: rev},
		{Kind: storage.OpPut, Key: dataPath(m.Name, n), Value: val, IfRevision: 0},
		// Due at once: a crash before promotion is resumed by the next run.
		storage.Put(rotatePrefix+m.Name, []byte(now.Format(time.RFC3339Nano))),
	}
	for _, p := range del {
		ops = append(ops, storage.Delete(p))
	}
	if err := s.store.Apply(ctx, ops...); err != nil {
		return 0, 0, err
	}
	_, rev, err = s.load(ctx, m.Name)
	return n, rev, err
}

// DefaultRotationConcurrency is how many due rotations RotateDue runs at
// once.
const DefaultRotationConcurrency = 8

// WithRotationConcurrency sets how many due rotations RotateDue runs at
// once (0: DefaultRotationConcurrency).
func WithRotationConcurrency(n int) Option { return func(s *Service) { s.rot.concurrency = n } }

func (r *rotator) workers() int {
	if r.concurrency <= 0 {
		return DefaultRotationConcurrency
	}
	return r.concurrency
}

// lease is how long a rotation's pending version counts as in progress
// after it was written or claimed: both webhook calls, and a minute.
func (r *rotator) lease() time.Duration {
	t := r.timeout
	if t <= 0 {
		t = DefaultWebhookTimeout
	}
	return 2*t + time.Minute
}

// inProgress reports whether m's pending version was written or claimed
// so recently that its rotation may still be calling the webhook.
func (s *Service) inProgress(m *meta, now time.Time) bool {
	return m.Pending != 0 && m.Rotation != nil && m.Rotation.State == RotationPending && now.Sub(m.UpdatedAt) < s.rot.lease()
}

// claim marks a resumed rotation as in progress (state pending, updated
// now) in a write conditional on rev: of two callers resuming the same
// version at once, only one calls the webhook.
func (s *Service) claim(ctx context.Context, m *meta, rev int64) (int64, error) {
	m.Rotation.State, m.UpdatedAt = RotationPending, s.now().UTC()
	mv, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	if err := s.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: metaPrefix + m.Name, Value: mv, IfRevision: rev}); err != nil {
		return 0, err
	}
	_, rev, err = s.load(ctx, m.Name)
	return rev, err
}

// rollbackAt clears a pending stage whose version is gone, conditional on
// rev, and returns the new revision.
func (s *Service) rollbackAt(ctx context.Context, m *meta, rev int64) (uint32, int64, error) {
	ops := m.rollback(s.now().UTC())
	mv, err := json.Marshal(m)
	if err != nil {
		return 0, 0, err
	}
	if err := s.store.Apply(ctx, append([]storage.Op{{Kind: storage.OpPut, Key: metaPrefix + m.Name, Value: mv, IfRevision: rev}}, ops...)...); err != nil {
		return 0, 0, err
	}
	_, rev, err = s.load(ctx, m.Name)
	return 0, rev, err
}

// promote is phase 3: current = n, previous = old, in one write
// conditional on the revision read here, and only if the secret is still
// at (old, pending n).
func (s *Service) promote(ctx context.Context, name string, old, n uint32) error {
	m, rev, err := s.load(ctx, name)
	if err != nil {
		return err
	}
	if m.Pending != n || m.Current != old || m.DeletedAt != nil || m.Rotation == nil {
		return fmt.Errorf("%w: secret %q is no longer at current %d with pending %d", storage.ErrConflict, name, old, n)
	}
	if vm := m.find(n); vm == nil || vm.DestroyedAt != nil {
		// Destroyed during phase 2: as current it would make every read
		// fail. The next run rolls it back and starts over.
		return fmt.Errorf("%w: secret %q: pending version %d was destroyed during the rotation", storage.ErrConflict, name, n)
	}
	now := s.now().UTC()
	m.Previous, m.Current, m.Pending, m.UpdatedAt = old, n, 0, now
	r := m.Rotation
	r.State, r.Attempts, r.LastError, r.LastRotated = RotationIdle, 0, "", &now
	r.NextAt = now.Add(time.Duration(r.Every) * time.Second)
	del := m.prune(now)
	mv, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ops := []storage.Op{{Kind: storage.OpPut, Key: metaPrefix + name, Value: mv, IfRevision: rev},
		storage.Put(rotatePrefix+name, []byte(r.NextAt.Format(time.RFC3339Nano)))}
	for _, p := range del {
		ops = append(ops, storage.Delete(p))
	}
	return s.store.Apply(ctx, ops...)
}

// recordFailure stores a failed step in the rotation metadata, if the
// secret is still pending n.
func (s *Service) recordFailure(ctx context.Context, name string, n uint32, step string, cause error) error {
	_, err := s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		if m.Rotation == nil || m.Pending != n {
			return nil, nil
		}
		r := m.Rotation
		r.State = RotationFailed
		r.Attempts++
		msg := "step " + step + ": " + cause.Error()
		if len(msg) > maxLastError {
			msg = msg[:maxLastError]
		}
		r.LastError = msg
		r.NextAt = now.Add(retryDelay(r.Attempts))
		return []storage.Op{storage.Put(rotatePrefix+name, []byte(r.NextAt.Format(time.RFC3339Nano)))}, nil
	})
	return err
}

// retryDelay is the backoff after the attempts-th failure.
func retryDelay(attempts int) time.Duration {
	d := firstRetryDelay
	for i := 1; i < attempts && d < MaxRetryDelay; i++ {
		d *= 2
	}
	return min(d, MaxRetryDelay)
}

// callWebhook POSTs call and wants 2xx with {"status":"ok"}. With a key,
// the call carries a Coffer-Signature over its body (docs/formats.md). Its
// errors name the status or the parse failure, never the response body.
func (s *Service) callWebhook(ctx context.Context, hook string, key []byte, call webhookCall) error {
	body, _ := json.Marshal(call)
	if u, err := url.Parse(hook); err != nil || u.Scheme != "https" {
		ctx = context.WithValue(ctx, loopbackOnly{}, true)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(body))
	if err != nil {
		return errors.New("the webhook URL does not make a request")
	}
	req.Header.Set("Content-Type", "application/json")
	if len(key) != 0 {
		req.Header.Set(webhooksig.Header, webhooksig.Sign(key, s.now(), body))
	}
	resp, err := s.rot.httpClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.Is(err, errRefusedAddress) {
			return errRefusedAddress
		}
		if errors.Is(err, errNotLoopback) {
			return errNotLoopback
		}
		if errors.As(err, &ue) && ue.Timeout() {
			return errors.New("the webhook did not answer within the timeout")
		}
		return errors.New("the webhook could not be reached")
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxWebhookResponse+1))
	if err != nil {
		return errors.New("reading the webhook's answer failed")
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return fmt.Errorf("the webhook answered a redirect (%d), which is not followed", resp.StatusCode)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the webhook answered status %d", resp.StatusCode)
	}
	if len(b) > MaxWebhookResponse {
		return fmt.Errorf("the webhook's answer is larger than %d bytes", MaxWebhookResponse)
	}
	var ans struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(b, &ans) != nil || ans.Status != "ok" {
		return errors.New(`the webhook's answer is not {"status":"ok"}`)
	}
	return nil
}

// RotateDue rotates every secret whose rotation is due, and resumes the
// ones left pending. It lists the rotation markers (one per secret with a
// rotation configuration), not every secret. It runs as a background job
// on the job leader; a rotation lost to a concurrent one (another replica)
// is skipped, not counted as a failure. Each rotation it runs is recorded
// (SetRotationRecorder) before it starts, or not run. It returns the
// rotations completed.
func (s *Service) RotateDue(ctx context.Context) (int, error) {
	marks, err := s.store.List(ctx, rotatePrefix)
	if err != nil {
		return 0, err
	}
	now := s.now().UTC()
	var (
		wg      sync.WaitGroup
		sem     = make(chan struct{}, s.rot.workers())
		mu      sync.Mutex // guards done, failing and errs
		done    int
		failing int64
		errs    []error
	)
	note := func(ok, failed bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if ok {
			done++
		}
		if failed {
			failing++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range marks {
		if ctx.Err() != nil {
			break
		}
		m, rev, failed, err := s.dueAt(ctx, p, now)
		if m == nil {
			note(false, failed, err)
			continue
		}
		// At most s.rot.workers() at once: one slow webhook (up to its
		// timeout, twice) does not hold up the others. Each rotation's
		// writes stay conditional on the revision read here, so the
		// claims and compare-and-swap keep it exactly once.
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, err, recErr := s.rotateRecorded(ctx, m, rev)
			note(false, false, recErr)
			switch {
			case errors.Is(err, errRotationNotRecorded):
				note(false, false, err)
			case err == nil:
				note(true, false, nil)
			case errors.Is(err, storage.ErrConflict), errors.Is(err, ErrRotationPending):
				// Another replica rotated or wrote it meanwhile, or is
				// rotating it now.
			case errors.Is(err, ErrRotationFailed):
				note(false, true, nil)
			default:
				note(false, true, err)
			}
		})
	}
	wg.Wait()
	s.rot.failing.Store(failing)
	s.rot.failingAt.Store(now.UnixNano())
	return done, errors.Join(errs...)
}

// dueAt reads the secret of rotation marker p and returns it (at rev) if
// its rotation is due at now or left pending; otherwise m is nil, and
// failing tells whether its rotation is failing. A marker whose secret is
// gone or has no rotation configuration is dropped.
func (s *Service) dueAt(ctx context.Context, p string, now time.Time) (m *meta, rev int64, failing bool, err error) {
	name := strings.TrimPrefix(p, rotatePrefix)
	m, rev, err = s.load(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, 0, false, s.dropMarker(ctx, p, name, 0)
	case err != nil:
		return nil, 0, false, err
	case m.Rotation == nil:
		// Only if still unconfigured: a rotation set again since the
		// load wrote this marker anew.
		return nil, 0, false, s.dropMarker(ctx, p, name, rev)
	case m.DeletedAt != nil:
		return nil, 0, false, nil
	case now.Before(m.Rotation.NextAt) && !(m.Pending != 0 && m.Rotation.State == RotationPending):
		return nil, 0, m.Rotation.State == RotationFailed, nil
	}
	return m, rev, false, nil
}

// boundString cuts s to at most n bytes for an error message.
func boundString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
