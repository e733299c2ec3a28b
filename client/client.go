// Package client is the Go SDK for Coffer, a self-hosted key management
// service.
//
// A Client talks to one Coffer server over its JSON REST API (/v1). It is safe
// for concurrent use by many goroutines and keeps connections alive, so create
// one Client and share it rather than creating one per request.
//
// Create a client from the standard environment variables (COFFER_ADDR,
// COFFER_TOKEN, COFFER_CACERT, COFFER_SKIP_VERIFY):
//
//	c, err := client.FromEnv()
//	if err != nil {
//		log.Fatal(err)
//	}
//
// or configure it explicitly:
//
//	c, err := client.New("https://coffer.example.com:8200",
//		client.WithToken(os.Getenv("COFFER_TOKEN")),
//		client.WithCACertFile("/etc/coffer/ca.pem"),
//	)
//
// Encrypt and decrypt with a key, naming it by id or by alias:
//
//	ctx := context.Background()
//	enc, err := c.Encrypt(ctx, client.EncryptRequest{
//		KeyID:     "alias/payments",
//		Plaintext: []byte("4111 1111 1111 1111"),
//		Context:   map[string]string{"tenant": "acme"},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	dec, err := c.Decrypt(ctx, client.DecryptRequest{
//		Ciphertext: enc.Ciphertext,
//		Context:    map[string]string{"tenant": "acme"},
//	})
//
// Every method takes a context first; its deadline and cancellation apply to
// the whole HTTP exchange. A response with a non-2xx status is returned as an
// *APIError, which carries the server's stable error code:
//
//	var apiErr *client.APIError
//	if errors.As(err, &apiErr) && apiErr.Code == "key_not_found" {
//		// ...
//	}
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAddress is the server address used when none is configured.
const DefaultAddress = "http://127.0.0.1:8200"

// Environment variables read by FromEnv.
const (
	// EnvAddress holds the server address, for example https://coffer:8200.
	EnvAddress = "COFFER_ADDR"
	// EnvToken holds the bearer token.
	EnvToken = "COFFER_TOKEN"
	// EnvCACert holds the path of a PEM file with the CA certificates to trust.
	EnvCACert = "COFFER_CACERT"
	// EnvSkipVerify, when "1" or "true", disables TLS certificate
	// verification. Use it only against a development server with a
	// self-signed certificate.
	EnvSkipVerify = "COFFER_SKIP_VERIFY"
)

// defaultUserAgent is sent unless WithUserAgent says otherwise.
const defaultUserAgent = "coffer-go-client"

// maxResponseBytes bounds how much of a successful response is read.
// Batch answers can be large, so this is generous.
const maxResponseBytes = 256 << 20

// maxErrorBytes bounds how much of an error response is read.
const maxErrorBytes = 64 << 10

// Client is a Coffer API client. It is safe for concurrent use.
type Client struct {
	endpoints      []*endpoint // at least one
	pref           atomic.Int32
	backoff        time.Duration
	attemptTimeout time.Duration
	http           *http.Client
	userAgent      string
	door           string

	mu    sync.RWMutex
	token string

	accessKeyID, accessKeySecret string
	session                      *session // role login with refresh, or nil
}

// config collects the options before a Client is built.
type config struct {
	token      string
	httpClient *http.Client
	tlsConfig  *tls.Config
	caFile     string
	skipVerify bool
	userAgent  string
	door       string

	accessKeyID, accessKeySecret string
	login                        *loginConfig
	clientCert                   *tls.Certificate
	tokenCache                   RoleTokenCache

	backoff        *time.Duration // nil: DefaultFailoverBackoff
	attemptTimeout time.Duration
}

// Option configures a Client in New or FromEnv.
type Option func(*config) error

// WithToken sets the bearer token sent in the Authorization header. It can be
// changed later with SetToken.
func WithToken(token string) Option {
	return func(c *config) error {
		c.token = token
		return nil
	}
}

// WithHTTPClient makes the Client send its requests through hc instead of
// building its own tuned transport. It cannot be combined with
// WithCACertFile, WithTLSConfig or WithInsecureSkipVerify: configure TLS on
// hc's transport instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) error {
		if hc == nil {
			return errors.New("client: WithHTTPClient: nil *http.Client")
		}
		c.httpClient = hc
		return nil
	}
}

// WithCACertFile trusts the PEM-encoded CA certificates in the file at path
// (in addition to any roots set by WithTLSConfig, or instead of the system
// roots otherwise). An empty path is ignored.
func WithCACertFile(path string) Option {
	return func(c *config) error {
		c.caFile = path
		return nil
	}
}

// WithTLSConfig sets the TLS configuration used for https addresses. The
// Client works on a clone of cfg.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error {
		if cfg == nil {
			c.tlsConfig = nil
			return nil
		}
		c.tlsConfig = cfg.Clone()
		return nil
	}
}

// WithInsecureSkipVerify disables verification of the server's TLS
// certificate when skip is true. It exists for development servers with
// self-signed certificates; never use it in production.
func WithInsecureSkipVerify(skip bool) Option {
	return func(c *config) error {
		c.skipVerify = skip
		return nil
	}
}

// WithDoor names the front door the client's requests come through (for
// example "kms-plugin"), so the server's audit trail records it.
func WithDoor(door string) Option {
	return func(c *config) error {
		c.door = door
		return nil
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *config) error {
		c.userAgent = ua
		return nil
	}
}

// New returns a Client for the server at addr, an http:// or https:// URL
// such as "https://coffer.example.com:8200". An empty addr means
// DefaultAddress. A path in addr (for a server behind a reverse proxy) is
// kept as a prefix of every request path.
//
// addr may list several replicas of one server, separated by commas
// ("https://coffer-0:8200,https://coffer-1:8200"): the Client then fails
// over between them (see NewEndpoints and failover.go's rules).
func New(addr string, opts ...Option) (*Client, error) {
	addrs, err := splitAddresses(addr)
	if err != nil {
		return nil, err
	}
	return newClient(addrs, opts)
}

func newClient(addrs []string, opts []Option) (*Client, error) {
	eps, err := normalizeAddresses(addrs)
	if err != nil {
		return nil, err
	}
	cfg := config{userAgent: defaultUserAgent}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}

	hc := cfg.httpClient
	if hc != nil {
		if cfg.tlsConfig != nil || cfg.caFile != "" || cfg.skipVerify || cfg.clientCert != nil {
			return nil, errors.New("client: WithHTTPClient cannot be combined with WithCACertFile, WithTLSConfig or WithInsecureSkipVerify; configure TLS on the http.Client's transport")
		}
	} else {
		tlsCfg, err := buildTLSConfig(&cfg)
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Transport: newTransport(tlsCfg)}
	}

	c := &Client{
		endpoints:       eps,
		backoff:         DefaultFailoverBackoff,
		attemptTimeout:  cfg.attemptTimeout,
		http:            hc,
		userAgent:       cfg.userAgent,
		door:            cfg.door,
		token:           cfg.token,
		accessKeyID:     cfg.accessKeyID,
		accessKeySecret: cfg.accessKeySecret,
	}
	if cfg.backoff != nil {
		c.backoff = *cfg.backoff
	}
	if l := cfg.login; l != nil {
		switch {
		case l.kind != "":
		case cfg.accessKeyID != "" || cfg.token != "":
			l.kind = "assume-role"
		case cfg.clientCert != nil || cfg.tlsConfig != nil && len(cfg.tlsConfig.Certificates) > 0:
			l.kind = "cert"
		default:
			return nil, errors.New("client: WithRole needs a credential to assume it with: an access key, a token or a client certificate")
		}
		c.session = &session{cfg: *l, now: time.Now, cache: cfg.tokenCache}
	}
	return c, nil
}

// FromEnv returns a Client configured from the environment: COFFER_ADDR
// (default http://127.0.0.1:8200), COFFER_CACERT, COFFER_SKIP_VERIFY=1 and a
// credential: COFFER_TOKEN, or COFFER_ACCESS_KEY_ID with
// COFFER_SECRET_ACCESS_KEY, or COFFER_ROLE with COFFER_TOKEN_FILE (a
// Kubernetes projected token; COFFER_CLUSTER optional), or
// COFFER_CLIENT_CERT with COFFER_CLIENT_KEY. COFFER_ROLE with a token,
// access key or client certificate assumes that role. Options in opts are applied after the environment and
// so take precedence.
func FromEnv(opts ...Option) (*Client, error) {
	addr := os.Getenv(EnvAddress)
	var envOpts []Option
	tok, akID, akSecret := os.Getenv(EnvToken), os.Getenv(EnvAccessKeyID), os.Getenv(EnvSecretAccessKey)
	role, tokenFile := os.Getenv(EnvRole), os.Getenv(EnvTokenFile)
	switch {
	case tok != "":
		envOpts = append(envOpts, WithToken(tok))
	case akID != "" || akSecret != "":
		envOpts = append(envOpts, WithAccessKey(akID, akSecret))
	case role != "" && tokenFile != "":
		envOpts = append(envOpts, WithKubernetesLogin(role, tokenFile, os.Getenv(EnvCluster)))
		role = ""
	}
	if cert := os.Getenv(EnvClientCert); cert != "" {
		envOpts = append(envOpts, WithClientCertificate(cert, os.Getenv(EnvClientKey)))
	}
	if role != "" && (tok != "" || akID != "" || os.Getenv(EnvClientCert) != "") {
		envOpts = append(envOpts, WithRole(role))
	}
	if ca := os.Getenv(EnvCACert); ca != "" {
		envOpts = append(envOpts, WithCACertFile(ca))
	}
	if skip, err := ParseBoolEnv(os.Getenv(EnvSkipVerify)); err != nil {
		return nil, fmt.Errorf("client: %s: %w", EnvSkipVerify, err)
	} else if skip {
		envOpts = append(envOpts, WithInsecureSkipVerify(true))
	}
	return New(addr, append(envOpts, opts...)...)
}

// ParseBoolEnv interprets the value of a boolean environment variable such as
// COFFER_SKIP_VERIFY: "" , "0", "false", "no" and "off" are false; "1",
// "true", "yes" and "on" are true (case-insensitively); anything else is an
// error.
func ParseBoolEnv(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	return false, fmt.Errorf("invalid boolean %q (use 1 or 0)", v)
}

// Address returns the server address the Client talks to: with several
// endpoints, the one its next request goes to first (the last that
// answered, unless it failed since).
func (c *Client) Address() string { return c.endpoints[c.order(time.Now())[0]].base }

// SetToken replaces the bearer token used by subsequent requests, for
// example after a token refresh. It is safe to call concurrently with
// requests in flight.
func (c *Client) SetToken(token string) {
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
}

// Token returns the bearer token currently in use.
func (c *Client) Token() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.token
}

// normalizeAddress validates addr and strips a trailing slash.
func normalizeAddress(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		addr = DefaultAddress
	}
	shown := redactAddress(addr)
	if !strings.Contains(addr, "://") {
		return "", fmt.Errorf("client: invalid address %q: it must start with http:// or https:// (like http://%s)", shown, strings.TrimLeft(shown, "/"))
	}
	u, err := url.Parse(addr)
	if err != nil {
		// url.Error repeats the whole address: say only what is wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("client: invalid address %q: %v", shown, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("client: invalid address %q: it must start with http:// or https://", shown)
	}
	if u.Host == "" {
		return "", fmt.Errorf("client: invalid address %q: missing host", shown)
	}
	if u.User != nil {
		return "", fmt.Errorf("client: invalid address %q: it must not carry credentials (give a token with WithToken or COFFER_TOKEN)", shown)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("client: invalid address %q: it must not carry a query or a fragment", shown)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// redactAddress returns addr with any user information (user:password@,
// or a token put there) replaced by "REDACTED@", for error messages. It
// works on text that does not parse as a URL too.
func redactAddress(addr string) string {
	rest, scheme := addr, ""
	if i := strings.Index(addr, "://"); i >= 0 {
		scheme, rest = addr[:i+3], addr[i+3:]
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		rest = "REDACTED" + rest[at:]
	}
	return scheme + rest
}

// buildTLSConfig combines WithTLSConfig, WithCACertFile and
// WithInsecureSkipVerify.
func buildTLSConfig(cfg *config) (*tls.Config, error) {
	tlsCfg := cfg.tlsConfig
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.caFile != "" {
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return nil, fmt.Errorf("client: reading CA certificate: %w", err)
		}
		pool := tlsCfg.RootCAs
		if pool == nil {
			pool = x509.NewCertPool()
		} else {
			pool = pool.Clone()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA certificate file %s holds no PEM certificate", cfg.caFile)
		}
		tlsCfg.RootCAs = pool
	}
	if cfg.skipVerify {
		tlsCfg.InsecureSkipVerify = true //nolint:gosec // explicitly requested for development servers
	}
	if cfg.clientCert != nil {
		tlsCfg.Certificates = append(tlsCfg.Certificates, *cfg.clientCert)
	}
	return tlsCfg, nil
}

// newTransport returns a keep-alive transport tuned for many concurrent
// requests to a single server. HTTP/2 is negotiated over TLS.
func newTransport(tlsCfg *tls.Config) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
}

// do sends one request. path is already escaped; in, when non-nil, is sent
// as JSON; out, when non-nil, receives the JSON answer of a 2xx response.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	_, err := c.doStatus(ctx, method, path, query, in, out)
	return err
}

// doStatus is do that also returns the HTTP status of a 2xx response.
func (c *Client) doStatus(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	return c.send(ctx, method, path, query, in, out, authDefault)
}

// send sends a request with the credential mode says. A request made with
// a role session that gets 401 logs in again and is retried once.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in, out any, mode authMode) (int, error) {
	if ctx == nil {
		return 0, errors.New("client: nil context")
	}
	status, err := c.sendOnce(ctx, method, path, query, in, out, mode, false)
	var ae *APIError
	if mode == authDefault && c.session != nil && errors.As(err, &ae) && ae.StatusCode == http.StatusUnauthorized {
		status, err = c.sendOnce(ctx, method, path, query, in, out, mode, true)
	}
	return status, err
}

// sendOnce sends a request, to each endpoint in turn as the failover rules
// allow. The body is encoded once and replayed from memory.
func (c *Client) sendOnce(ctx context.Context, method, path string, query url.Values, in, out any, mode authMode, relogin bool) (int, error) {
	var buf []byte
	if in != nil {
		var err error
		buf, err = json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("client: encoding %s %s request: %w", method, path, err)
		}
	}
	// The credential is set up (a role login, which itself fails over)
	// before the first attempt, so an attempt's error is its endpoint's.
	if mode == authDefault && c.session != nil {
		if _, err := c.session.current(ctx, c, relogin); err != nil {
			return 0, fmt.Errorf("client: logging in as role %q: %w", c.session.cfg.role, err)
		}
		relogin = false
	}
	return c.sendFailover(ctx, method, path, func(ctx context.Context, base string) (int, bool, error) {
		return c.attemptOn(ctx, base, method, path, query, buf, in != nil, out, mode, relogin)
	})
}

// attemptOn sends the request to one endpoint. transport reports that err
// came before any HTTP answer.
func (c *Client) attemptOn(ctx context.Context, base, method, path string, query url.Values, buf []byte, hasBody bool, out any, mode authMode, relogin bool) (status int, transport bool, err error) {
	target := base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, false, fmt.Errorf("client: %w", err)
	}
	if err := c.setAuth(ctx, req, mode, relogin); err != nil {
		return 0, false, err
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.door != "" {
		req.Header.Set("X-Coffer-Door", c.door)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return 0, true, err
	}
	defer func() {
		// Drain what is left so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes))
		_ = resp.Body.Close()
	}()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, false, decodeError(method, path, resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, false, nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, false, fmt.Errorf("client: reading %s %s response: %w", method, path, err)
	}
	if len(data) > maxResponseBytes {
		return resp.StatusCode, false, fmt.Errorf("client: %s %s response is larger than %d bytes", method, path, maxResponseBytes)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, false, &ResponseError{
			Method:      method,
			Path:        path,
			StatusCode:  resp.StatusCode,
			ContentType: resp.Header.Get("Content-Type"),
			Body:        snippet(data),
			Err:         err,
		}
	}
	return resp.StatusCode, false, nil
}

// decodeError turns a non-2xx response into an *APIError.
func decodeError(method, path string, resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	apiErr := &APIError{
		StatusCode: resp.StatusCode,
		RequestID:  resp.Header.Get("X-Request-Id"),
		Method:     method,
		Path:       path,
	}
	var eb ErrorBody
	if err := json.Unmarshal(data, &eb); err == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		apiErr.Code = eb.Error.Code
		apiErr.Message = eb.Error.Message
		apiErr.CurrentVersion = eb.Error.CurrentVersion
		if eb.Error.RequestID != "" {
			apiErr.RequestID = eb.Error.RequestID
		}
		return apiErr
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		apiErr.Message = "empty response body"
	case mt == "application/json":
		apiErr.Message = fmt.Sprintf("unrecognized JSON error body: %s", snippet(data))
	default:
		if ct == "" {
			ct = "none"
		}
		apiErr.Message = fmt.Sprintf("response is not JSON (Content-Type %s): %s", ct, snippet(data))
	}
	return apiErr
}

// snippet returns the start of a response body for an error message.
func snippet(data []byte) string {
	const limit = 200
	s := strings.Join(strings.Fields(string(data)), " ")
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// APIError is returned for every response with a non-2xx status.
type APIError struct {
	// StatusCode is the HTTP status of the response.
	StatusCode int
	// Code is the server's stable error class, for example "key_not_found".
	// It is empty when the body was not a Coffer error (a proxy's error page,
	// for instance).
	Code string
	// Message is the server's explanation, or a description of the
	// unexpected body.
	Message string
	// RequestID correlates the error with the server's logs.
	RequestID string
	// Method and Path identify the request that failed.
	Method, Path string
	// CurrentVersion is, for a failed secret check-and-set (Code
	// "cas_mismatch"), the secret's current version (0: it does not exist).
	CurrentVersion *uint32
}

// Error formats the error as "code: message (request id ID)".
func (e *APIError) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(e.Code)
	} else {
		fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
		if t := http.StatusText(e.StatusCode); t != "" {
			b.WriteString(" " + t)
		}
		if e.Method != "" {
			fmt.Fprintf(&b, " from %s %s", e.Method, e.Path)
		}
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request id %s)", e.RequestID)
	}
	return b.String()
}

// ResponseError is returned when a 2xx response cannot be decoded, usually
// because the address points at something that is not a Coffer server.
type ResponseError struct {
	// Method and Path identify the request.
	Method, Path string
	// StatusCode is the HTTP status of the response.
	StatusCode int
	// ContentType is the response's Content-Type header.
	ContentType string
	// Body is a quoted excerpt of the response body.
	Body string
	// Err is the JSON decoding error.
	Err error
}

// Error describes the undecodable response.
func (e *ResponseError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "none"
	}
	return fmt.Sprintf("client: %s %s: HTTP %d response is not a valid Coffer JSON answer (Content-Type %s): %v; body: %s (is the address a Coffer server?)",
		e.Method, e.Path, e.StatusCode, ct, e.Err, e.Body)
}

// Unwrap returns the JSON decoding error.
func (e *ResponseError) Unwrap() error { return e.Err }
