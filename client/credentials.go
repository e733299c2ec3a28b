package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Environment variables for credentials other than COFFER_TOKEN, read by
// FromEnv. Like the cloud SDKs' web-identity variables, COFFER_ROLE with
// COFFER_TOKEN_FILE makes the client log in with a Kubernetes projected
// service-account token and refresh the Coffer token before it expires.
const (
	EnvAccessKeyID     = "COFFER_ACCESS_KEY_ID"
	EnvSecretAccessKey = "COFFER_SECRET_ACCESS_KEY"
	EnvRole            = "COFFER_ROLE"
	EnvTokenFile       = "COFFER_TOKEN_FILE"
	EnvCluster         = "COFFER_CLUSTER"
	EnvClientCert      = "COFFER_CLIENT_CERT"
	EnvClientKey       = "COFFER_CLIENT_KEY"
)

// refreshAt is the part of a token's lifetime after which it is renewed
// by logging in again.
const refreshAt = 2.0 / 3

// WithAccessKey authenticates every request with an access key (HTTP Basic
// with the id as user and the secret as password). With WithRole, the
// access key is used only to assume the role.
func WithAccessKey(id, secret string) Option {
	return func(c *config) error {
		if id == "" || secret == "" {
			return errors.New("client: WithAccessKey: id and secret are required")
		}
		c.accessKeyID, c.accessKeySecret = id, secret
		return nil
	}
}

// WithKubernetesLogin makes the client log in as role with the projected
// service-account token in tokenFile (re-read at every login, as the
// kubelet rotates it), and log in again when two thirds of the Coffer
// token's lifetime have passed or the server answers 401. cluster may be
// empty when the token's issuer identifies it.
func WithKubernetesLogin(role, tokenFile, cluster string) Option {
	return func(c *config) error {
		if role == "" || tokenFile == "" {
			return errors.New("client: WithKubernetesLogin: role and token file are required")
		}
		c.login = &loginConfig{kind: "kubernetes", role: role, tokenFile: tokenFile, cluster: cluster}
		return nil
	}
}

// WithRole makes the client act in role: it assumes the role with its
// access key (WithAccessKey) or logs in with its client certificate
// (WithClientCertificate) and refreshes the token before it expires.
func WithRole(role string) Option {
	return func(c *config) error {
		if role == "" {
			return errors.New("client: WithRole: empty role")
		}
		if c.login == nil {
			c.login = &loginConfig{role: role}
		} else {
			c.login.role = role
		}
		return nil
	}
}

// WithClientCertificate presents the certificate in certFile (PEM, with
// its key in keyFile) in TLS handshakes, for servers with a client CA
// (mTLS) and for certificate login (WithRole).
func WithClientCertificate(certFile, keyFile string) Option {
	return func(c *config) error {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("client: client certificate: %w", err)
		}
		c.clientCert = &cert
		return nil
	}
}

// RoleTokenCache keeps the token of a role session (WithRole,
// WithKubernetesLogin) between processes, so that a command-line tool does
// not log in again on every run. Load returns the cached token with when
// it was issued and when it expires; Store is called after every login.
// Implementations must keep the token as secret as the credential itself
// (the coffer CLI writes a 0600 file under the user's config directory).
type RoleTokenCache interface {
	Load() (token string, createdAt, expiresAt time.Time, ok bool)
	Store(token string, createdAt, expiresAt time.Time)
}

// WithRoleTokenCache makes a role session start from the token in cache,
// while it is within the first two thirds of its lifetime, and store every
// token it logs in for. A token the server refuses (401) is replaced by a
// new login as usual.
func WithRoleTokenCache(cache RoleTokenCache) Option {
	return func(c *config) error {
		c.tokenCache = cache
		return nil
	}
}

type loginConfig struct {
	kind                     string // kubernetes, assume-role or cert; set in New when empty
	role, tokenFile, cluster string
}

// session holds the token a login produced and refreshes it.
type session struct {
	cfg   loginConfig
	now   func() time.Time
	cache RoleTokenCache // nil: none

	mu      sync.Mutex
	token   string
	refresh time.Time // when to log in again
}

// current returns a valid token, logging in when there is none, it is due
// for refresh, or force is set.
func (s *session) current(ctx context.Context, c *Client, force bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && !force && s.now().Before(s.refresh) {
		return s.token, nil
	}
	if s.token == "" && !force && s.cache != nil {
		if tok, created, expires, ok := s.cache.Load(); ok && tok != "" && !expires.IsZero() && expires.After(created) {
			if refresh := refreshTime(created, expires); s.now().Before(refresh) {
				s.token, s.refresh = tok, refresh
				return tok, nil
			}
		}
	}
	var resp *CreateTokenResponse
	var err error
	switch s.cfg.kind {
	case "kubernetes":
		var jwt []byte
		jwt, err = os.ReadFile(s.cfg.tokenFile)
		if err != nil {
			return "", fmt.Errorf("client: reading the service-account token: %w", err)
		}
		resp, err = c.KubernetesLogin(ctx, KubernetesLoginRequest{Role: s.cfg.role, JWT: strings.TrimSpace(string(jwt)), Cluster: s.cfg.cluster})
	case "cert":
		resp, err = c.CertLogin(ctx, CertLoginRequest{Role: s.cfg.role})
	default:
		resp = &CreateTokenResponse{}
		_, err = c.send(ctx, http.MethodPost, "/v1/auth/assume-role", nil, AssumeRoleRequest{Role: s.cfg.role}, resp, authBase)
	}
	if err != nil {
		return "", err
	}
	s.token = resp.Token
	life := time.Hour
	if resp.ExpiresAt != nil {
		life = resp.ExpiresAt.Sub(resp.CreatedAt)
	}
	s.refresh = s.now().Add(time.Duration(float64(life) * refreshAt))
	if s.cache != nil && resp.ExpiresAt != nil {
		s.cache.Store(resp.Token, resp.CreatedAt, *resp.ExpiresAt)
	}
	return s.token, nil
}

// refreshTime is when a token issued at created and expiring at expires is
// due for a new login: after two thirds of its lifetime.
func refreshTime(created, expires time.Time) time.Time {
	return created.Add(time.Duration(float64(expires.Sub(created)) * refreshAt))
}

// authMode says which credential a request carries.
type authMode int

const (
	authDefault authMode = iota // the session's token, else the access key, else the token
	authBase                    // the access key or token, never the session (to assume a role)
	authNone                    // nothing (logins)
)

// setAuth puts the credential of mode on req.
func (c *Client) setAuth(ctx context.Context, req *http.Request, mode authMode, force bool) error {
	switch {
	case mode == authNone:
		return nil
	case mode == authDefault && c.session != nil:
		tok, err := c.session.current(ctx, c, force)
		if err != nil {
			return fmt.Errorf("client: logging in as role %q: %w", c.session.cfg.role, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case c.accessKeyID != "":
		req.SetBasicAuth(c.accessKeyID, c.accessKeySecret)
	default:
		if tok := c.Token(); tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return nil
}

// AuthorizationHeader returns the value of the Authorization header the
// client's next request would carry, logging in first when it acts in a
// role; "" without a credential. It is for tools that send their own
// requests, such as load generators: a role token is not refreshed there,
// so it is good for that token's lifetime.
func (c *Client) AuthorizationHeader(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Address(), nil)
	if err != nil {
		return "", err
	}
	if err := c.setAuth(ctx, req, authDefault, false); err != nil {
		return "", err
	}
	return req.Header.Get("Authorization"), nil
}

// doAnonymous sends a request without any credential (logins).
func (c *Client) doAnonymous(ctx context.Context, method, path string, in, out any) error {
	_, err := c.send(ctx, method, path, nil, in, out, authNone)
	return err
}
