// Package transit is the transit auto-unseal: the root key is wrapped by a
// key in another Coffer server, the unsealing Coffer, through its KMS API
// (Encrypt and Decrypt with Coffer's own Go client). The material that
// unwraps the root key stays in that other server, under its own policy
// and audit trail; this server's disk holds only the ciphertext.
//
// Every ciphertext the seal makes carries the encryption context
// coffer-seal: root-key (plus any configured pairs), so the unsealing
// Coffer's policy can grant this use of its key and nothing else, and the
// blob records that context to give it back to Decrypt. The blob format is
// described in blob.go and docs/formats.md.
//
// Never let two Coffers unseal each other: after a power loss neither can
// start, each waiting for the other.
package transit

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/seal"
)

// Type is the seal's name, as Type returns it.
const Type = "transit"

// Errors the seal wraps besides seal.ErrBlob and seal.ErrMisconfigured.
var (
	// ErrUnavailable means the unsealing Coffer could not be reached or
	// cannot serve now (sealed, overloaded, throttling): retry with
	// backoff.
	ErrUnavailable = errors.New("cannot reach the unsealing Coffer")
	// ErrRefused means the unsealing Coffer answered and refused: the
	// credential is not accepted, the policy does not allow the call, or
	// the key is missing, disabled or pending deletion. An operator can
	// fix it there, so retrying later is right.
	ErrRefused = errors.New("the unsealing Coffer refused the request")
)

// Timeouts.
const (
	// defaultCallTimeout bounds a call whose context has no deadline, so
	// that a server that accepts connections and never answers does not
	// hold an unseal forever.
	defaultCallTimeout = 30 * time.Second
	// attemptTimeout bounds one attempt on one replica when several
	// addresses are configured, so that a stuck replica leaves time for
	// the next.
	attemptTimeout = 10 * time.Second
)

// healthProbe is Health's public plaintext.
var healthProbe = []byte("coffer transit seal health probe")

// Seal is the transit seal. It is safe for concurrent use.
type Seal struct {
	cfg   Config
	addrs []string
	ctx   map[string]string // the configured context plus the purpose pair
	c     *client.Client
	hc    *http.Client // nil with a client certificate (the client builds its own)

	closed atomic.Bool
}

var _ seal.Seal = (*Seal)(nil)

// New builds the seal. It reads the CA certificate and the access key or
// client certificate files, but makes no network call: the unsealing
// Coffer may be down at start, and Unwrap says so until it answers. Its
// errors wrap seal.ErrMisconfigured.
func New(c Config) (*Seal, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Seal{cfg: c, ctx: map[string]string{PurposeName: PurposeValue}}
	for _, a := range c.addresses() {
		norm, _ := checkAddress(a) // Validate checked it
		s.addrs = append(s.addrs, norm)
	}
	maps.Copy(s.ctx, c.EncryptionContext)
	s.cfg.EncryptionContext = maps.Clone(c.EncryptionContext)
	s.cfg.Addresses = slices.Clone(c.Addresses)

	opts := []client.Option{client.WithUserAgent("coffer-transit-seal")}
	if len(s.addrs) > 1 {
		opts = append(opts, client.WithAttemptTimeout(attemptTimeout))
	}
	misconfigured := func(err error) error {
		return fmt.Errorf("%w: transit seal: %v", seal.ErrMisconfigured, err)
	}
	if c.ClientCertFile != "" {
		// Certificate login: the client loads the pair and presents it.
		if err := checkPrivate("client key file", c.ClientKeyFile); err != nil {
			return nil, misconfigured(err)
		}
		opts = append(opts, client.WithCACertFile(c.CACertFile),
			client.WithClientCertificate(c.ClientCertFile, c.ClientKeyFile), client.WithRole(c.Role))
	} else {
		hc, err := newHTTPClient(c.CACertFile)
		if err != nil {
			return nil, misconfigured(err)
		}
		s.hc = hc
		opts = append(opts, client.WithHTTPClient(hc))
		switch {
		case c.AccessKeyFile != "":
			id, secret, err := readAccessKey(c.AccessKeyFile)
			if err != nil {
				return nil, misconfigured(err)
			}
			opts = append(opts, client.WithAccessKey(id, secret), client.WithRole(c.Role))
		case c.KubernetesTokenFile != "":
			opts = append(opts, client.WithKubernetesLogin(c.Role, c.KubernetesTokenFile, c.Cluster))
		}
		// token_file: no client credential; each call carries the token
		// read from the file then (bearerTransport).
	}
	cl, err := client.NewEndpoints(s.addrs, opts...)
	if err != nil {
		return nil, misconfigured(err)
	}
	s.c = cl
	return s, nil
}

// newHTTPClient is the seal's HTTP client: TLS 1.2+ trusting caFile (or
// the system roots), the per-call token of token_file, and no redirects,
// since nothing but the configured servers may receive the credential.
func newHTTPClient(caFile string) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading ca_cert_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_cert_file %s holds no PEM certificate", caFile)
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &http.Client{
		Transport: &bearerTransport{base: tr},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// tokenKey carries a call's token (token_file) in its context.
type tokenKey struct{}

// bearerTransport puts the token of the request's context, if any, in its
// Authorization header. The token travels with the call, so concurrent
// calls never see each other's token when the file is replaced.
type bearerTransport struct{ base *http.Transport }

// RoundTrip sends req with the token of its context.
func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, _ := req.Context().Value(tokenKey{}).(string)
	if tok == "" {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(r)
}

// checkPrivate refuses a key file that group or others can access.
func checkPrivate(what, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("the %s %s has mode %04o: group and others must have no access (chmod 600 %s)", what, path, perm, path)
	}
	return nil
}

// Type returns "transit".
func (s *Seal) Type() string { return Type }

// call prepares a call's context: a default deadline, and the token of
// token_file read now.
func (s *Seal) call(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, errors.New("transit seal: closed")
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
	}
	if s.cfg.TokenFile != "" {
		tok, err := readToken(s.cfg.TokenFile)
		if err != nil {
			cancel()
			return nil, nil, fmt.Errorf("transit seal: %w", err)
		}
		ctx = context.WithValue(ctx, tokenKey{}, tok)
	}
	return ctx, cancel, nil
}

// Wrap encrypts the 32-byte root key under the configured key, with the
// seal's context, and checks that the result decrypts to it before
// returning the blob: a wrapped root key that the credential cannot unwrap
// (a policy without kms:Decrypt) would lock the server out at its next
// start.
func (s *Seal) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	if len(plaintext) != RootKeySize {
		return nil, fmt.Errorf("transit seal: the root key must be %d bytes, not %d", RootKeySize, len(plaintext))
	}
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	resp, err := s.c.Encrypt(ctx, client.EncryptRequest{KeyID: s.cfg.Key, Plaintext: plaintext, Context: s.ctx})
	if err != nil {
		return nil, s.explain("kms:Encrypt", err)
	}
	p, err := ciphertext.Parse(resp.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("transit seal: the unsealing Coffer at %s answered Encrypt with a ciphertext this server cannot read (%v); is it a Coffer of a compatible version?", s.where(), err)
	}
	if id := (&blob{header: p.Header}).keyID(); id != resp.KeyID || p.KeyVersion != resp.KeyVersion {
		return nil, fmt.Errorf("transit seal: the unsealing Coffer answered Encrypt with a ciphertext of key %s version %d but said key %s version %d", id, p.KeyVersion, resp.KeyID, resp.KeyVersion)
	}
	out, err := encodeBlob(s.cfg.Key, s.ctx, resp.Ciphertext)
	if err != nil {
		return nil, err
	}
	got, err := s.unwrap(ctx, out)
	if err != nil {
		hint := ""
		if errors.Is(err, ErrRefused) {
			hint = " (the credential needs kms:Decrypt as well as kms:Encrypt)"
		}
		return nil, fmt.Errorf("transit seal: the root key was encrypted, but checking that it decrypts failed, so the blob is not returned%s: %w", hint, err)
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, plaintext) != 1 {
		return nil, fmt.Errorf("transit seal: the unsealing Coffer decrypted the new ciphertext to something else than the root key; not stored")
	}
	return out, nil
}

// Unwrap decrypts a blob Wrap returned, with the context it records. A
// blob that is malformed, or that the unsealing Coffer refuses as not
// authentic or not made with the configured key (an alias now naming
// another key counts), is an error wrapping seal.ErrBlob.
func (s *Seal) Unwrap(ctx context.Context, data []byte) ([]byte, error) {
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	return s.unwrap(ctx, data)
}

func (s *Seal) unwrap(ctx context.Context, data []byte) ([]byte, error) {
	b, err := parseBlob(data)
	if err != nil {
		return nil, err
	}
	id := b.keyID()
	// Decrypt names the configured key, so the unsealing Coffer refuses a
	// ciphertext of any other key (invalid_ciphertext, ErrBlob below):
	// the blob opens only with the key this seal is configured for, as it
	// resolves now, whatever key the credential may also use.
	resp, err := s.c.Decrypt(ctx, client.DecryptRequest{Ciphertext: b.ciphertext, Context: b.context, KeyID: s.cfg.Key})
	if err != nil {
		err = s.explain("kms:Decrypt", err)
		// A blob of another key is refused as not authentic, or as
		// forbidden when the credential may not use that key: say which.
		if errors.Is(err, seal.ErrBlob) || errors.Is(err, ErrRefused) {
			err = fmt.Errorf("%w (the blob was wrapped with key %s, whose ciphertext names key id %s)", err, b.keyRef, id)
		}
		return nil, err
	}
	if len(resp.Plaintext) != RootKeySize || resp.KeyID != id {
		clear(resp.Plaintext)
		return nil, fmt.Errorf("%w: transit blob: the unsealing Coffer decrypted it with key %s to %d bytes, not a %d-byte root key of key %s", seal.ErrBlob, resp.KeyID, len(resp.Plaintext), RootKeySize, id)
	}
	return resp.Plaintext, nil
}

// Health encrypts and decrypts a public probe under the configured key
// with the seal's context (plus coffer-seal-probe: health, which Unwrap
// refuses): it proves the unsealing Coffer answers, accepts the
// credential and lets it use the key both ways.
func (s *Seal) Health(ctx context.Context) error {
	ctx, cancel, err := s.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	pctx := maps.Clone(s.ctx)
	pctx[probeName] = "health"
	enc, err := s.c.Encrypt(ctx, client.EncryptRequest{KeyID: s.cfg.Key, Plaintext: healthProbe, Context: pctx})
	if err != nil {
		return s.explain("kms:Encrypt", err)
	}
	dec, err := s.c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext, Context: pctx, KeyID: s.cfg.Key})
	if err != nil {
		return s.explain("kms:Decrypt", err)
	}
	if subtle.ConstantTimeCompare(dec.Plaintext, healthProbe) != 1 {
		return fmt.Errorf("transit seal: the unsealing Coffer at %s decrypted the health probe to something else", s.where())
	}
	return nil
}

// Info describes the seal: addresses, key, credential kind and file paths,
// context. It holds no secret.
func (s *Seal) Info() map[string]string {
	info := map[string]string{
		"type":       Type,
		"address":    strings.Join(s.addrs, ","),
		"key":        s.cfg.Key,
		"credential": s.cfg.credentialKind(),
		"context":    contextString(s.ctx),
	}
	for k, v := range map[string]string{
		"role": s.cfg.Role, "token_file": s.cfg.TokenFile, "ca_cert_file": s.cfg.CACertFile,
		"kubernetes_token_file": s.cfg.KubernetesTokenFile, "cluster": s.cfg.Cluster,
		"client_cert_file": s.cfg.ClientCertFile,
	} {
		if v != "" {
			info[k] = v
		}
	}
	return info
}

// Close makes later calls fail and closes idle connections.
func (s *Seal) Close() error {
	s.closed.Store(true)
	if s.hc != nil {
		s.hc.CloseIdleConnections()
	}
	return nil
}

// where names the unsealing Coffer in errors.
func (s *Seal) where() string { return strings.Join(s.addrs, ", ") }

// contextString is the context as sorted name=value pairs.
func contextString(ctx map[string]string) string {
	names := slices.Sorted(maps.Keys(ctx))
	for i, k := range names {
		names[i] = k + "=" + ctx[k]
	}
	return strings.Join(names, ",")
}

// explain turns a client error into one that says what to do. The client's
// errors carry neither the token nor the plaintext.
func (s *Seal) explain(action string, err error) error {
	last := err
	var fe *client.FailoverError
	if errors.As(err, &fe) && len(fe.Attempts) > 0 {
		// The last endpoint's answer decides; the others were skipped
		// over because they could not serve.
		last = fe.Attempts[len(fe.Attempts)-1].Err
	}
	var ae *client.APIError
	if !errors.As(last, &ae) {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("transit seal: %s with key %s at %s: %w", action, s.cfg.Key, s.where(), err)
		}
		// No HTTP answer: refused, reset, DNS, TLS, timeout.
		hint := "retry with backoff"
		var cve *tls.CertificateVerificationError
		if errors.As(err, &cve) {
			hint = "its TLS certificate is not trusted: check ca_cert_file (read at start: a new CA needs a restart; an unsealing Coffer with tls.auto has a new self-signed certificate at each start, so give it a stable one), and that the address's host name is in the certificate"
		}
		return fmt.Errorf("%w at %s (%s with key %s; %s): %w", ErrUnavailable, s.where(), action, s.cfg.Key, hint, err)
	}
	login := strings.HasPrefix(ae.Path, "/v1/auth/")
	switch {
	case ae.StatusCode == http.StatusTooManyRequests || ae.StatusCode == http.StatusServiceUnavailable ||
		ae.StatusCode == http.StatusBadGateway || ae.StatusCode == http.StatusGatewayTimeout:
		return fmt.Errorf("%w at %s: it cannot serve now (sealed, overloaded or throttling; retry with backoff): %w", ErrUnavailable, s.where(), err)
	case login:
		return fmt.Errorf("%w: logging in to role %q at %s failed; check the role's trust and the credential: %w", ErrRefused, s.cfg.Role, s.where(), err)
	case ae.StatusCode == http.StatusUnauthorized:
		hint := "the credential"
		if s.cfg.TokenFile != "" {
			hint = "the token in " + s.cfg.TokenFile + " (expired, revoked, or of another server?)"
		}
		return fmt.Errorf("%w: the unsealing Coffer at %s does not accept %s: %w", ErrRefused, s.where(), hint, err)
	case ae.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: permission denied for %s on key %s at %s: the credential's policy must allow kms:Encrypt and kms:Decrypt on %s with context %s: %w",
			ErrRefused, action, s.cfg.Key, s.where(), s.cfg.Key, PurposeName+"="+PurposeValue, err)
	case ae.Code == "key_disabled":
		return fmt.Errorf("%w: key %s is disabled in the unsealing Coffer at %s; enable it there (coffer key enable %s): %w", ErrRefused, s.cfg.Key, s.where(), s.cfg.Key, err)
	case ae.Code == "key_pending_deletion":
		return fmt.Errorf("%w: key %s is scheduled for deletion in the unsealing Coffer at %s; cancel the deletion there (coffer key cancel-deletion), or this server's root key is lost with it: %w", ErrRefused, s.cfg.Key, s.where(), err)
	case ae.Code == "key_deleted":
		return fmt.Errorf("%w: key %s was deleted in the unsealing Coffer at %s; the root key cannot be unwrapped with it any more (restore that Coffer from a snapshot taken before the deletion): %w", seal.ErrMisconfigured, s.cfg.Key, s.where(), err)
	case ae.Code == "key_not_found" && action == "kms:Decrypt":
		// The ciphertext names a key the server does not have (an alias
		// that is missing is alias_not_found).
		return fmt.Errorf("%w: the unsealing Coffer at %s has no key with the id the wrapped root key names (the wrong server, a key deleted there, or an altered blob): %w", ErrRefused, s.where(), err)
	case ae.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: key %s was not found in the unsealing Coffer at %s (wrong key or alias, or the wrong server?): %w", ErrRefused, s.cfg.Key, s.where(), err)
	case ae.Code == "invalid_ciphertext" && action == "kms:Decrypt":
		return fmt.Errorf("%w: the unsealing Coffer at %s refused the wrapped root key as not authentic (altered, or made with another key or context): %w", seal.ErrBlob, s.where(), err)
	}
	return fmt.Errorf("transit seal: %s with key %s at %s failed: %w", action, s.cfg.Key, s.where(), err)
}
