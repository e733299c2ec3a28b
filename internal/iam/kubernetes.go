package iam

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/k8sauth"
)

// Modes of cluster registration.
const (
	ModeJWKS        = "jwks"
	ModeTokenReview = "tokenreview"
)

// compileCluster validates a cluster and builds its verifier.
func compileCluster(c Cluster, now func() time.Time) (*clusterEntry, error) {
	if err := checkName("cluster", c.Name); err != nil {
		return nil, err
	}
	e := &clusterEntry{Cluster: c}
	var err error
	switch c.Mode {
	case ModeJWKS:
		if c.Issuer == "" || c.JWKS == "" {
			return nil, fmt.Errorf("%w: jwks mode needs issuer and jwks (or discovery_url)", ErrInvalidArgument)
		}
		e.verifier, err = k8sauth.NewJWKSVerifier(c.Issuer, []byte(c.JWKS), now)
	case ModeTokenReview:
		if c.APIServer == "" || c.ReviewerToken == "" {
			return nil, fmt.Errorf("%w: tokenreview mode needs api_server and reviewer_token", ErrInvalidArgument)
		}
		e.verifier, err = k8sauth.NewTokenReviewVerifier(k8sauth.TokenReviewConfig{APIServer: c.APIServer, CAPEM: []byte(c.CACert), ReviewerToken: c.ReviewerToken})
	default:
		return nil, fmt.Errorf("%w: mode %q: want jwks or tokenreview", ErrInvalidArgument, c.Mode)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cluster %q: %v", ErrInvalidArgument, c.Name, err)
	}
	return e, nil
}

// RegisterCluster stores (or replaces) a cluster. In jwks mode with a
// discovery_url, the server fetches the issuer and keys itself (OIDC
// discovery), trusting ca_cert and sending reviewer_token when given.
func (s *Service) RegisterCluster(ctx context.Context, c Cluster) (Cluster, error) {
	if c.CACert != "" {
		if ok := x509.NewCertPool().AppendCertsFromPEM([]byte(c.CACert)); !ok {
			return Cluster{}, fmt.Errorf("%w: ca_cert holds no PEM certificate", ErrInvalidArgument)
		}
	}
	if c.Mode == ModeJWKS && c.DiscoveryURL != "" {
		if c.JWKS != "" {
			return Cluster{}, fmt.Errorf("%w: give jwks or discovery_url, not both", ErrInvalidArgument)
		}
		if u, err := url.Parse(c.DiscoveryURL); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			return Cluster{}, fmt.Errorf("%w: discovery_url %q must be an http(s) URL", ErrInvalidArgument, c.DiscoveryURL)
		}
		iss, jwks, err := k8sauth.Discover(ctx, k8sauth.DiscoveryConfig{URL: c.DiscoveryURL, CAPEM: []byte(c.CACert), BearerToken: c.ReviewerToken})
		if err != nil {
			return Cluster{}, fmt.Errorf("%w: discovery at %s failed: %v", ErrInvalidArgument, c.DiscoveryURL, err)
		}
		if c.Issuer != "" && c.Issuer != iss {
			return Cluster{}, fmt.Errorf("%w: discovery says the issuer is %q, not %q", ErrInvalidArgument, iss, c.Issuer)
		}
		c.Issuer, c.JWKS = iss, string(jwks)
	}
	e, err := compileCluster(c, s.now)
	if err != nil {
		return Cluster{}, err
	}
	err = s.change(func(st *state) error {
		// A replacement keeps the stored cluster's creation time, not the
		// cached one's (writeStored); otherwise the last writer wins.
		if err := s.writeStored(ctx, clusterPath+c.Name, "cluster "+c.Name, func(cur []byte) ([]byte, error) {
			e.CreatedAt = s.now().UTC()
			var old Cluster
			if cur != nil && json.Unmarshal(cur, &old) == nil && !old.CreatedAt.IsZero() {
				e.CreatedAt = old.CreatedAt
			}
			return json.Marshal(e.Cluster)
		}); err != nil {
			return err
		}
		st.clusters[c.Name] = e
		return nil
	})
	return clusterView(e), err
}

// clusterView hides the reviewer token.
func clusterView(e *clusterEntry) Cluster {
	c := e.Cluster
	c.ReviewerToken = ""
	return c
}

// GetCluster describes a cluster (without its reviewer token).
func (s *Service) GetCluster(_ context.Context, name string) (Cluster, error) {
	e := s.state.Load().clusters[name]
	if e == nil {
		return Cluster{}, fmt.Errorf("%w: cluster %q is not registered", ErrNotFound, name)
	}
	return clusterView(e), nil
}

// ListClusters describes every cluster by name.
func (s *Service) ListClusters(_ context.Context) []Cluster {
	st := s.state.Load()
	out := make([]Cluster, 0, len(st.clusters))
	for _, e := range st.clusters {
		out = append(out, clusterView(e))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeleteCluster forgets a cluster; its service accounts can no longer log
// in (tokens already issued live out their TTL unless revoked).
func (s *Service) DeleteCluster(ctx context.Context, name string) error {
	return s.change(func(st *state) error {
		// Whether it is registered is the store's say, not the cache's.
		if err := s.writeStored(ctx, clusterPath+name, "cluster "+name, func(cur []byte) ([]byte, error) {
			if cur == nil {
				return nil, fmt.Errorf("%w: cluster %q is not registered", ErrNotFound, name)
			}
			return nil, nil
		}); err != nil {
			return err
		}
		delete(st.clusters, name)
		return nil
	})
}

// unverifiedIssuer reads the iss claim of a JWT without verifying it, only
// to pick the cluster that will verify it.
func unverifiedIssuer(jwt string) string {
	iss, _ := unverifiedClaims(jwt)
	return iss
}

// unverifiedClaims reads the iss and sub claims of a JWT without verifying
// them.
func unverifiedClaims(jwt string) (iss, sub string) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 || len(parts[1]) > 16<<10 {
		return "", ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ""
	}
	var c struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "", ""
	}
	return c.Iss, c.Sub
}

// KubernetesLoginClaim names, without verifying anything, the principal a
// Kubernetes login claims to be: the role, the cluster, and the token's
// issuer and subject (the service account). The server budgets login
// failures per source and claim (internal/authlimit), so an attacker's
// failures do not refuse another workload's valid logins.
func KubernetesLoginClaim(req *KubernetesLoginRequest) string {
	iss, sub := unverifiedClaims(req.JWT)
	return "kubernetes\x00" + req.Role + "\x00" + req.Cluster + "\x00" + iss + "\x00" + sub
}

// KubernetesLogin exchanges a pod's projected service-account token for a
// temporary token of a role that trusts the service account.
//
// A login to a role that does not exist is answered as one to a role that
// does not trust the caller (the token is verified all the same by the
// registered cluster it names, if there is one), so logins cannot list the
// roles; both are failures the server counts against the caller's budget.
func (s *Service) KubernetesLogin(ctx context.Context, req KubernetesLoginRequest) (string, auth.Principal, error) {
	return s.kubernetesLogin(ctx, req, nil)
}

// kubernetesLogin is KubernetesLogin; shape, when set, adjusts the token
// to issue once the service account is verified and trusted (the
// web-identity sessions of websession.go).
func (s *Service) kubernetesLogin(ctx context.Context, req KubernetesLoginRequest, shape func(*auth.Spec)) (string, auth.Principal, error) {
	if req.JWT == "" {
		return "", auth.Principal{}, fmt.Errorf("%w: jwt is required: the pod's projected service-account token", ErrInvalidArgument)
	}
	iss := unverifiedIssuer(req.JWT)
	if iss == "" {
		return "", auth.Principal{}, fmt.Errorf("%w: the token is malformed: not a JWT with an iss claim; send the pod's projected service-account token", auth.ErrUnauthenticated)
	}
	st := s.state.Load()
	r := st.roles[req.Role]
	// The clusters the role trusts, narrowed to the one named or the one
	// whose issuer the token claims.
	var candidates []*clusterEntry
	for _, c := range st.clusters {
		trusted := false
		for i := 0; r != nil && i < len(r.Kubernetes); i++ {
			trusted = trusted || globMatch(r.Kubernetes[i].Cluster, c.Name)
		}
		switch {
		case !trusted:
		case req.Cluster != "":
			if c.Name == req.Cluster {
				candidates = append(candidates, c)
			}
		case c.Issuer == "" || c.Issuer == iss:
			candidates = append(candidates, c)
		}
	}
	switch {
	case len(candidates) == 0:
		return "", auth.Principal{}, s.untrustedLogin(ctx, st, req, iss)
	case len(candidates) > 1:
		sort.Slice(candidates, func(i, j int) bool { return candidates[i].Name < candidates[j].Name })
		return "", auth.Principal{}, fmt.Errorf("%w: the token could come from clusters %s and %s; name one with cluster", ErrInvalidArgument, candidates[0].Name, candidates[1].Name)
	}
	c := candidates[0]
	// Verify once per audience the role's entries for this cluster ask for.
	var lastErr error
	tried := map[string]bool{}
	for _, k := range r.Kubernetes {
		if !globMatch(k.Cluster, c.Name) || tried[k.Audience] {
			continue
		}
		tried[k.Audience] = true
		id, err := c.verifier.Verify(ctx, req.JWT, k.Audience)
		if errors.Is(err, k8sauth.ErrUnknownKey) {
			// The cluster may have rotated its signing key.
			if fresh := s.refreshJWKS(ctx, c.Name); fresh != nil {
				c = fresh
				id, err = c.verifier.Verify(ctx, req.JWT, k.Audience)
			}
		}
		if err != nil {
			lastErr = err
			continue
		}
		match := false
		for _, k2 := range r.Kubernetes {
			match = match || k2.Audience == k.Audience && globMatch(k2.Cluster, c.Name) &&
				globMatch(k2.Namespace, id.Namespace) && globMatch(k2.ServiceAccount, id.ServiceAccount)
		}
		if !match {
			return "", auth.Principal{}, notTrustedSA(req.Role, id, c.Name)
		}
		subject := "kubernetes:" + c.Name + "/" + id.Namespace + "/" + id.ServiceAccount
		notRevoked := func() error {
			// Checked again just before the token is stored: the
			// verification above may have taken a TokenReview round trip.
			if at, ok := s.state.Load().revokedAt(subject); ok && (id.IssuedAt.IsZero() || !id.IssuedAt.After(at)) {
				return fmt.Errorf("%w: credentials of %s issued before %s were revoked; mint a new service-account token", auth.ErrUnauthenticated, subject, at.Format(time.RFC3339))
			}
			return nil
		}
		if err := notRevoked(); err != nil {
			return "", auth.Principal{}, err
		}
		attrs := map[string]string{"cluster": c.Name}
		if id.PodName != "" {
			attrs["pod"] = id.PodName
		}
		if id.ServiceAccountUID != "" {
			attrs["service_account_uid"] = id.ServiceAccountUID
		}
		spec := auth.Spec{Valid: notRevoked, Role: r.Name, Subject: subject, Cluster: c.Name, Namespace: id.Namespace, ServiceAccount: id.ServiceAccount,
			DisplayName: id.Namespace + "/" + id.ServiceAccount, Attributes: attrs}
		if shape != nil {
			shape(&spec)
		}
		return s.issue(ctx, r, spec, req.TTL, nil)
	}
	return "", auth.Principal{}, verifyError(lastErr)
}

// verifyError is the answer to a token a cluster's verifier refused. It
// stays an ErrExpired when the token had expired (the AWS door answers
// that differently).
func verifyError(err error) error {
	if errors.Is(err, k8sauth.ErrUnavailable) {
		return err
	}
	return &refusedToken{msg: auth.ErrUnauthenticated.Error() + ": " + strings.TrimPrefix(err.Error(), "k8sauth: "), expired: errors.Is(err, k8sauth.ErrExpired)}
}

// refusedToken is an auth.ErrUnauthenticated for a refused
// service-account token, and a k8sauth.ErrExpired when it had expired.
type refusedToken struct {
	msg     string
	expired bool
}

func (e *refusedToken) Error() string { return e.msg }

// Is matches auth.ErrUnauthenticated, and k8sauth.ErrExpired for an
// expired token.
func (e *refusedToken) Is(target error) bool {
	return target == auth.ErrUnauthenticated || e.expired && target == k8sauth.ErrExpired
}

// notTrustedSA is the answer to a verified service account the role does
// not trust, or to one logging in to a role that does not exist.
func notTrustedSA(role string, id k8sauth.Identity, cluster string) error {
	return fmt.Errorf("%w: role %q does not exist or does not trust service account %s/%s of cluster %s", auth.ErrForbidden, role, id.Namespace, id.ServiceAccount, cluster)
}

// untrustedLogin answers a Kubernetes login that no cluster the role
// trusts can verify, whether the role exists or not: the registered
// cluster the token names (by cluster, or by its issuer) verifies it with
// the default audience, so a forged or expired token gets the same answer
// as it would from a role trusting that cluster, and a genuine one hears
// that the role does not exist or does not trust it.
func (s *Service) untrustedLogin(ctx context.Context, st *state, req KubernetesLoginRequest, iss string) error {
	var named []*clusterEntry
	for _, c := range st.clusters {
		if req.Cluster != "" && c.Name == req.Cluster || req.Cluster == "" && c.Issuer != "" && c.Issuer == iss {
			named = append(named, c)
		}
	}
	if len(named) == 1 {
		c := named[0]
		id, err := c.verifier.Verify(ctx, req.JWT, DefaultAudience)
		if err != nil {
			return verifyError(err)
		}
		return notTrustedSA(req.Role, id, c.Name)
	}
	if req.Cluster != "" {
		return fmt.Errorf("%w: role %q does not exist or does not trust cluster %q", auth.ErrUnauthenticated, req.Role, req.Cluster)
	}
	return fmt.Errorf("%w: role %q does not exist or trusts no registered cluster with the token's issuer %q", auth.ErrUnauthenticated, req.Role, truncate(iss))
}

// CertLogin exchanges a verified client certificate for a temporary token
// of a role whose certificates trust matches it.
//
// A role that does not exist is answered as one that does not trust the
// certificate, so logins cannot list the roles.
func (s *Service) CertLogin(ctx context.Context, cert *x509.Certificate, req CertLoginRequest) (string, auth.Principal, error) {
	if cert == nil {
		return "", auth.Principal{}, fmt.Errorf("%w: no verified client certificate; connect over TLS with a certificate signed by the server's client CA", auth.ErrUnauthenticated)
	}
	r := s.state.Load().roles[req.Role]
	var trust []CertificateTrust
	if r != nil {
		trust = r.Certificates
	}
	match := ""
	for _, t := range trust {
		if t.CommonName != "" && cert.Subject.CommonName != "" && globMatch(t.CommonName, cert.Subject.CommonName) {
			match = cert.Subject.CommonName
		}
		for _, d := range cert.DNSNames {
			if match == "" && t.DNSName != "" && globMatch(t.DNSName, d) {
				match = d
			}
		}
		if match != "" {
			break
		}
	}
	if match == "" {
		return "", auth.Principal{}, fmt.Errorf("%w: role %q does not exist or does not trust the certificate of %q", auth.ErrForbidden, req.Role, truncate(cert.Subject.CommonName))
	}
	return s.issue(ctx, r, auth.Spec{Role: r.Name, Subject: "cert:" + match, DisplayName: match,
		Attributes: map[string]string{"certificate_serial": cert.SerialNumber.Text(16)}}, req.TTL, nil)
}

// escape makes a principal name one storage path segment.
func escape(name string) string { return url.PathEscape(name) }

// jwksRefreshEvery bounds how often a cluster's JWKS is fetched again
// because a token named an unknown key.
const jwksRefreshEvery = time.Minute

// refreshJWKS fetches the JWKS of a cluster registered by discovery again,
// at most once per jwksRefreshEvery, and returns the updated cluster, or
// nil when nothing changed (not discovered, too soon, failed, same keys).
// A failure is not the caller's: the login is then refused as before.
func (s *Service) refreshJWKS(ctx context.Context, name string) *clusterEntry {
	s.refreshMu.Lock()
	if last, ok := s.refreshed[name]; ok && s.now().Sub(last) < jwksRefreshEvery {
		s.refreshMu.Unlock()
		return nil
	}
	s.refreshed[name] = s.now()
	s.refreshMu.Unlock()

	c := s.state.Load().clusters[name]
	if c == nil || c.Mode != ModeJWKS || c.DiscoveryURL == "" {
		return nil
	}
	iss, jwks, err := k8sauth.Discover(ctx, k8sauth.DiscoveryConfig{URL: c.DiscoveryURL, CAPEM: []byte(c.CACert), BearerToken: c.ReviewerToken})
	if err != nil || iss != c.Issuer || string(jwks) == c.JWKS {
		return nil
	}
	n := c.Cluster
	n.JWKS = string(jwks)
	e, err := compileCluster(n, s.now)
	if err != nil {
		return nil
	}
	err = s.change(func(st *state) error {
		// Only the keys change, on the stored cluster as it is now: one
		// replaced or deleted meanwhile, here or on another replica, is
		// left alone.
		if err := s.writeStored(ctx, clusterPath+name, "cluster "+name, func(cur []byte) ([]byte, error) {
			var stored Cluster
			if cur == nil || json.Unmarshal(cur, &stored) != nil || stored.Mode != ModeJWKS || stored.DiscoveryURL != c.DiscoveryURL || stored.Issuer != c.Issuer {
				return nil, ErrInUse
			}
			stored.JWKS = string(jwks)
			var err error
			if e, err = compileCluster(stored, s.now); err != nil {
				return nil, err
			}
			return json.Marshal(e.Cluster)
		}); err != nil {
			return err
		}
		st.clusters[name] = e
		return nil
	})
	if err != nil {
		return nil
	}
	return e
}
