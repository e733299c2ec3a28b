// Package kmsplugin is Coffer's Kubernetes KMS v2 front door: a gRPC service
// on a unix socket beside each kube-apiserver. The apiserver asks it to wrap
// and unwrap the seeds of its data-encryption keys; the plugin forwards each
// call to the Coffer server as one Encrypt or Decrypt with the configured key.
//
// The plugin is an adapter and holds no keys. What it adds is what the KMS v2
// contract asks of a plugin:
//
//   - key_id: "<coffer key id>:<key version>", so it changes on every
//     rotation (the apiserver then makes a new seed), is never reused and is
//     not secret;
//   - a cheap Status: answered from a health state that a background loop
//     refreshes with an encrypt/decrypt round trip, never a network call per
//     Status; an error when the key is disabled, pending deletion or
//     unreachable, so the apiserver stops writing;
//   - annotations: "version.coffer.dev" names the plugin's envelope version;
//     Decrypt refuses what it did not produce.
//
// Metrics and /livez, /readyz are served by Health (health.go).
package kmsplugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/ciphertext"
)

// Annotation keys and values the plugin writes and checks.
const (
	AnnotationVersion = "version.coffer.dev"
	EnvelopeVersion   = "1"
	// PurposeContext is the encryption context bound to every seed, so a
	// Coffer ciphertext made for another purpose does not open here.
	PurposeContextKey   = "coffer.dev/purpose"
	PurposeContextValue = "kubernetes-kms-v2"
	// ClusterContextKey names the cluster in a seed's encryption context
	// when Config.Cluster is set, so one cluster's seeds do not open for
	// another cluster's plugin sharing the key.
	ClusterContextKey = "coffer.dev/cluster"
	// HealthPurposeValue is the purpose of the health probe's round trip:
	// the probe (a known plaintext) never shares the seeds' context, so a
	// probe ciphertext is never a seed and a policy can tell them apart.
	HealthPurposeValue = "kubernetes-kms-v2-health"
	// MaxCiphertext is the KMS v2 limit on ciphertexts.
	MaxCiphertext = 1024
	// MaxKeyID is the KMS v2 limit on key ids.
	MaxKeyID = 1024
	// MaxPlaintext is the largest plaintext whose Coffer ciphertext fits in
	// MaxCiphertext. The apiserver wraps 32-byte seeds.
	MaxPlaintext = MaxCiphertext - ciphertext.Overhead
)

// purpose is the seed context of a plugin without Config.Cluster, and the
// one every seed had before the cluster was bound: seeds wrapped under it
// still decrypt (see seedContexts).
var purpose = map[string]string{PurposeContextKey: PurposeContextValue}

// Coffer is the part of the Coffer client the plugin uses.
type Coffer interface {
	Encrypt(ctx context.Context, req client.EncryptRequest) (*client.EncryptResponse, error)
	Decrypt(ctx context.Context, req client.DecryptRequest) (*client.DecryptResponse, error)
}

// Config configures a Plugin.
type Config struct {
	Coffer Coffer
	// Key is the Coffer key id or alias that wraps the seeds.
	Key string
	// Cluster is the name of the cluster whose apiserver the plugin
	// serves. When set it is bound into every new seed's encryption
	// context (coffer.dev/cluster); seeds wrapped without it still decrypt.
	Cluster string
	// HealthInterval is how often the round trip runs (default 10s). Health
	// older than three intervals counts as unhealthy.
	HealthInterval time.Duration
	// Timeout bounds each call to Coffer (default 5s).
	Timeout time.Duration
	Logger  *slog.Logger
	Metrics *Metrics // nil: none
	Now     func() time.Time
}

// health is the state Status answers from.
type health struct {
	keyID   string // current key_id, "" before the first success
	err     error  // nil when the last round trip worked
	class   string // error class of err: unreachable, key_unusable, auth, server
	checked time.Time
	okAt    time.Time // last success
}

// Plugin implements k8s.io/kms/pkg/service.Service.
type Plugin struct {
	cfg Config
	// seedCtx is the encryption context of new seeds; healthCtx that of
	// the health probe.
	seedCtx, healthCtx map[string]string
	state              atomic.Pointer[health]
	mu                 sync.Mutex // serializes state updates
}

var _ kmsservice.Service = (*Plugin)(nil)

// New returns a plugin; call Run to keep its health fresh.
func New(cfg Config) *Plugin {
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Plugin{cfg: cfg, seedCtx: purpose, healthCtx: map[string]string{PurposeContextKey: HealthPurposeValue}}
	if cfg.Cluster != "" {
		p.seedCtx = map[string]string{PurposeContextKey: PurposeContextValue, ClusterContextKey: cfg.Cluster}
		p.healthCtx = map[string]string{PurposeContextKey: HealthPurposeValue, ClusterContextKey: cfg.Cluster}
	}
	p.state.Store(&health{err: errors.New("no health check has run yet"), class: "starting"})
	return p
}

// KeyID is the KMS key_id of a Coffer key version.
func KeyID(cofferKeyID string, version uint32) string {
	return cofferKeyID + ":" + strconv.FormatUint(uint64(version), 10)
}

// ParseKeyID splits a key_id made by KeyID.
func ParseKeyID(s string) (string, uint32, error) {
	id, v, ok := strings.Cut(s, ":")
	if !ok || len(s) > MaxKeyID {
		return "", 0, fmt.Errorf("key_id %q was not made by the Coffer plugin (want <key id>:<version>)", truncate(s))
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return "", 0, fmt.Errorf("key_id %q was not made by the Coffer plugin: bad key id", truncate(s))
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("key_id %q was not made by the Coffer plugin: bad version", truncate(s))
	}
	// uuid.Parse and ParseUint also accept spellings KeyID never makes
	// (upper case, braces, "urn:uuid:", no dashes, leading zeros); a key_id
	// is compared as a string, so refuse every non-canonical form.
	if KeyID(u.String(), uint32(n)) != s {
		return "", 0, fmt.Errorf("key_id %q was not made by the Coffer plugin: not in canonical form", truncate(s))
	}
	return id, uint32(n), nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// KeyIDHash is the SHA-256 of a key_id, for metrics and logs.
func KeyIDHash(keyID string) string {
	sum := sha256.Sum256([]byte(keyID))
	return hex.EncodeToString(sum[:])
}

// Encrypt wraps a seed (or DEK) with the configured Coffer key.
func (p *Plugin) Encrypt(ctx context.Context, _ string, data []byte) (*kmsservice.EncryptResponse, error) {
	start := time.Now() // latency uses the monotonic clock, not cfg.Now
	resp, err := p.encrypt(ctx, data)
	p.cfg.Metrics.observe("encrypt", start, err)
	return resp, err
}

func (p *Plugin) encrypt(ctx context.Context, data []byte) (*kmsservice.EncryptResponse, error) {
	if len(data) == 0 {
		return nil, status.Error(codes.InvalidArgument, "nothing to encrypt: the plaintext is empty")
	}
	if len(data) > MaxPlaintext {
		// Refuse before calling Coffer: the ciphertext could not be
		// returned anyway, and Coffer's own limit (64 KiB) would answer
		// with a server-side error class.
		return nil, status.Errorf(codes.InvalidArgument, "plaintext of %d bytes is too large: its ciphertext would exceed the KMS v2 limit of %d bytes (at most %d plaintext bytes)", len(data), MaxCiphertext, MaxPlaintext)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	r, err := p.cfg.Coffer.Encrypt(ctx, client.EncryptRequest{KeyID: p.cfg.Key, Plaintext: data, Context: p.seedCtx})
	if err != nil {
		return nil, grpcError("encrypt", err)
	}
	if len(r.Ciphertext) > MaxCiphertext {
		return nil, status.Errorf(codes.InvalidArgument, "ciphertext of %d bytes exceeds the KMS v2 limit of %d; the plaintext was %d bytes", len(r.Ciphertext), MaxCiphertext, len(data))
	}
	keyID := KeyID(r.KeyID, r.KeyVersion)
	p.noteKeyID(keyID)
	return &kmsservice.EncryptResponse{
		Ciphertext:  r.Ciphertext,
		KeyID:       keyID,
		Annotations: map[string][]byte{AnnotationVersion: []byte(EnvelopeVersion)},
	}, nil
}

// Decrypt unwraps a ciphertext this plugin produced, under any version of
// the key that is not deleted.
func (p *Plugin) Decrypt(ctx context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	start := time.Now()
	out, err := p.decrypt(ctx, req)
	p.cfg.Metrics.observe("decrypt", start, err)
	return out, err
}

func (p *Plugin) decrypt(ctx context.Context, req *kmsservice.DecryptRequest) ([]byte, error) {
	if err := checkAnnotations(req.Annotations); err != nil {
		return nil, err
	}
	if len(req.Ciphertext) == 0 || len(req.Ciphertext) > MaxCiphertext {
		return nil, status.Errorf(codes.InvalidArgument, "ciphertext of %d bytes: want 1..%d", len(req.Ciphertext), MaxCiphertext)
	}
	id, version, err := ParseKeyID(req.KeyID)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	parsed, err := ciphertext.Parse(req.Ciphertext)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if uuid.UUID(parsed.KeyID).String() != id || parsed.KeyVersion != version {
		return nil, status.Errorf(codes.InvalidArgument, "key_id %q does not match the ciphertext, which names key %s version %d",
			req.KeyID, uuid.UUID(parsed.KeyID), parsed.KeyVersion)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	r, err := p.cfg.Coffer.Decrypt(ctx, client.DecryptRequest{Ciphertext: req.Ciphertext, Context: p.seedCtx})
	if err != nil && p.cfg.Cluster != "" && contextMismatch(err) {
		// A seed wrapped before the cluster was bound into the context
		// (or by a plugin without --cluster): every ciphertext the plugin
		// ever returned stays decryptable.
		r, err = p.cfg.Coffer.Decrypt(ctx, client.DecryptRequest{Ciphertext: req.Ciphertext, Context: purpose})
	}
	if err != nil {
		return nil, grpcError("decrypt", err)
	}
	return r.Plaintext, nil
}

// contextMismatch reports whether a Decrypt failed as a wrong encryption
// context fails: Coffer cannot tell a wrong context from a damaged
// ciphertext, and answers both with invalid_ciphertext.
func contextMismatch(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Code == "invalid_ciphertext"
}

func checkAnnotations(a map[string][]byte) error {
	v, ok := a[AnnotationVersion]
	if !ok {
		return status.Errorf(codes.InvalidArgument, "annotation %s is missing: the ciphertext was not made by the Coffer plugin", AnnotationVersion)
	}
	if string(v) != EnvelopeVersion {
		return status.Errorf(codes.InvalidArgument, "annotation %s is %q; this plugin reads version %s", AnnotationVersion, truncate(string(v)), EnvelopeVersion)
	}
	for k := range a {
		if k != AnnotationVersion {
			return status.Errorf(codes.InvalidArgument, "unexpected annotation %q: the Coffer plugin writes only %s", truncate(k), AnnotationVersion)
		}
	}
	return nil
}

// Status answers from the cached health state; it never calls Coffer.
func (p *Plugin) Status(context.Context) (*kmsservice.StatusResponse, error) {
	start := time.Now()
	h := p.state.Load()
	if err := p.healthErr(h); err != nil {
		err = status.Error(codes.Unavailable, err.Error())
		p.cfg.Metrics.observe("status", start, err)
		return nil, err
	}
	p.cfg.Metrics.observe("status", start, nil)
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: h.keyID}, nil
}

// healthErr is nil when the last round trip worked recently.
func (p *Plugin) healthErr(h *health) error {
	if h.err != nil {
		return h.err
	}
	if age := p.cfg.Now().Sub(h.okAt); age > 3*p.cfg.HealthInterval {
		return fmt.Errorf("the last successful health check was %s ago", age.Round(time.Second))
	}
	return nil
}

// Health reports the cached state: the current key_id, the error class
// ("" when healthy) and the error.
func (p *Plugin) Health() (keyID, class string, err error) {
	h := p.state.Load()
	err = p.healthErr(h)
	if err != nil {
		class = h.class
		if class == "" {
			class = "stale"
		}
	}
	return h.keyID, class, err
}

// noteKeyID makes keyID current after an Encrypt saw it.
func (p *Plugin) noteKeyID(keyID string) {
	if p.state.Load().keyID == keyID {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := *p.state.Load()
	if h.keyID == keyID {
		return
	}
	if h.keyID != "" && !newer(keyID, h.keyID) {
		return
	}
	p.cfg.Logger.Info("key_id changed", "key_id", keyID, "previous", h.keyID)
	h.keyID = keyID
	p.state.Store(&h)
	p.cfg.Metrics.setKeyID(keyID)
}

// newer reports whether a names a later version of the same key than b, or
// another key (the alias was moved).
func newer(a, b string) bool {
	ai, av, errA := ParseKeyID(a)
	bi, bv, errB := ParseKeyID(b)
	return errA != nil || errB != nil || ai != bi || av > bv
}

// Check runs one encrypt/decrypt round trip and updates the health state.
func (p *Plugin) Check(ctx context.Context) error {
	probe := []byte("coffer kms plugin health probe")
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	now := p.cfg.Now()
	var keyID string
	r, err := p.cfg.Coffer.Encrypt(ctx, client.EncryptRequest{KeyID: p.cfg.Key, Plaintext: probe, Context: p.healthCtx})
	if err == nil {
		keyID = KeyID(r.KeyID, r.KeyVersion)
		var d *client.DecryptResponse
		d, err = p.cfg.Coffer.Decrypt(ctx, client.DecryptRequest{Ciphertext: r.Ciphertext, Context: p.healthCtx})
		if err == nil && string(d.Plaintext) != string(probe) {
			err = errors.New("health round trip returned different bytes")
		}
	}
	p.mu.Lock()
	h := *p.state.Load()
	h.checked = now
	if err != nil {
		h.err, h.class = fmt.Errorf("health check with key %s failed: %w", p.cfg.Key, err), errorClass(err)
	} else {
		h.err, h.class, h.okAt = nil, "", now
		// An Encrypt that finished while this check was in flight may
		// already have made a later version current (noteKeyID); never go
		// back to an older version of the same key.
		if h.keyID != keyID && (h.keyID == "" || newer(keyID, h.keyID)) {
			p.cfg.Logger.Info("key_id changed", "key_id", keyID, "previous", h.keyID)
			h.keyID = keyID
			p.cfg.Metrics.setKeyID(keyID)
		}
	}
	p.state.Store(&h)
	p.mu.Unlock()
	p.cfg.Metrics.setHealth(err == nil, now)
	if err != nil {
		p.cfg.Logger.Warn("health check failed", "key", p.cfg.Key, "class", errorClass(err), "error", err)
	}
	return err
}

// Run checks health at once and then every HealthInterval until ctx ends.
func (p *Plugin) Run(ctx context.Context) {
	p.Check(ctx)
	t := time.NewTicker(p.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.Check(ctx)
		}
	}
}

// errorClass sorts a Coffer error for readiness reporting and gRPC codes.
func errorClass(err error) string {
	var api *client.APIError
	if errors.As(err, &api) {
		switch api.Code {
		case "key_disabled", "key_pending_deletion", "key_deleted", "key_not_found", "invalid_key_state":
			return "key_unusable"
		case "unauthenticated", "permission_denied":
			return "auth"
		case "sealed", "not_initialized":
			return "sealed"
		case "invalid_ciphertext", "invalid_request", "plaintext_too_large":
			return "invalid"
		}
		return "server"
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection refused") {
		return "unreachable"
	}
	return "unreachable"
}

func grpcError(op string, err error) error {
	code := codes.Unavailable
	switch errorClass(err) {
	case "invalid":
		code = codes.InvalidArgument
	case "key_unusable":
		code = codes.FailedPrecondition
	case "auth":
		code = codes.PermissionDenied
	case "server":
		code = codes.Internal
	}
	return status.Errorf(code, "coffer %s: %v", op, err)
}
