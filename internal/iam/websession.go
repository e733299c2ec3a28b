package iam

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
)

// WebIdentityRequest asks for AWS temporary credentials of a role
// (AssumeRoleWithWebIdentity) with a pod's projected service-account
// token: the same verification, trust and revocation as KubernetesLogin.
type WebIdentityRequest struct {
	Role string
	// JWT is the pod's projected service-account token.
	JWT string
	// SessionName names the session (RoleSessionName); it is kept as the
	// session's display name and its "session" attribute.
	SessionName string
	// Duration is how long the credentials last, capped by the role's
	// max_ttl.
	Duration time.Duration
}

// WebIdentitySession is the login of AssumeRoleWithWebIdentity: it
// exchanges a service-account token for a role token usable only as the
// session token of AWS temporary credentials (auth.Spec SigV4Only), and
// returns that token and its principal.
func (s *Service) WebIdentitySession(ctx context.Context, req WebIdentityRequest) (string, auth.Principal, error) {
	if req.SessionName == "" || len(req.SessionName) > 64 {
		return "", auth.Principal{}, fmt.Errorf("%w: the session name must be 1 to 64 characters", ErrInvalidArgument)
	}
	if req.Duration <= 0 {
		return "", auth.Principal{}, fmt.Errorf("%w: the session duration must be positive", ErrInvalidArgument)
	}
	d := req.Duration
	if r := s.state.Load().roles[req.Role]; r != nil && r.maxTTL > 0 && d > r.maxTTL {
		d = r.maxTTL // a role that does not exist is refused by the login, as one that does not trust the caller
	}
	return s.kubernetesLogin(ctx, KubernetesLoginRequest{Role: req.Role, JWT: req.JWT, TTL: d.String()}, func(spec *auth.Spec) {
		spec.SigV4Only = true
		spec.DisplayName = req.SessionName
		attrs := make(map[string]string, len(spec.Attributes)+1)
		for k, v := range spec.Attributes {
			attrs[k] = v
		}
		attrs["session"] = req.SessionName
		spec.Attributes = attrs
	})
}

// AuthenticateSessionSigned authenticates a request signed with temporary
// credentials: token is its X-Amz-Security-Token, keyID the access key id
// of its signature. The token must be a live session token (not expired,
// revoked, or used from outside its networks), keyID must be its access
// key id, and verify must accept the secret derived from it; the secret
// is wiped afterwards. Failures after the token is known are attributed
// to it.
func (s *Service) AuthenticateSessionSigned(ctx context.Context, token, keyID string, src netip.Addr, verify func(secret string) error) (auth.Principal, error) {
	p, err := s.tokens.LookupSession(token, src)
	if err != nil {
		return auth.Principal{}, err
	}
	fail := func(err error) (auth.Principal, error) {
		return auth.Principal{}, &auth.AttributedError{Kind: p.Kind, ID: p.Accessor, Err: err}
	}
	if !auth.SessionKeyIDMatches(keyID, p.Accessor) {
		return fail(fmt.Errorf("%w: the signature's access key id is not the one of this session token", auth.ErrUnauthenticated))
	}
	secret, err := s.tokens.SessionSecret(ctx, token)
	if err != nil {
		return auth.Principal{}, err
	}
	defer clear(secret)
	if err := verify(string(secret)); err != nil {
		return fail(err)
	}
	return p, nil
}
