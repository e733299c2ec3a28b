package k8sauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultTimeout bounds one TokenReview call when
// TokenReviewConfig.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Keys of TokenReview status.user.extra that name the pod a token is
// bound to.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// TokenReviewConfig configures NewTokenReviewVerifier.
type TokenReviewConfig struct {
	// APIServer is the cluster's apiserver, https://HOST[:PORT].
	APIServer string
	// CAPEM holds the CA certificates to trust for the apiserver (PEM);
	// empty means the system roots. Not with HTTPClient.
	CAPEM []byte
	// ReviewerToken is the bearer token Coffer authenticates with; its
	// user must be allowed to create tokenreviews (the ClusterRole
	// system:auth-delegator). Empty sends no Authorization header, for an
	// HTTPClient that authenticates by itself (a client certificate).
	ReviewerToken string
	// Timeout bounds each call (DefaultTimeout when zero).
	Timeout time.Duration
	// HTTPClient replaces the client built from CAPEM (tests, client
	// certificates). Redirects are never followed either way.
	HTTPClient *http.Client
}

// TokenReviewVerifier verifies tokens by asking the cluster's apiserver
// (the TokenReview API). Make one with NewTokenReviewVerifier.
type TokenReviewVerifier struct {
	url     string
	token   string
	timeout time.Duration
	client  *http.Client
	now     func() time.Time // only to name a refusal's cause
}

var _ Verifier = (*TokenReviewVerifier)(nil)

// NewTokenReviewVerifier returns a verifier that posts each token to
// cfg.APIServer's /apis/authentication.k8s.io/v1/tokenreviews.
func NewTokenReviewVerifier(cfg TokenReviewConfig) (*TokenReviewVerifier, error) {
	u, err := parseHTTPSURL("APIServer", cfg.APIServer)
	if err != nil {
		return nil, err
	}
	if cfg.ReviewerToken == "" && cfg.HTTPClient == nil {
		return nil, errors.New("k8sauth: a TokenReview needs a ReviewerToken (or an HTTPClient that authenticates)")
	}
	if strings.ContainsAny(cfg.ReviewerToken, "\r\n") {
		return nil, errors.New("k8sauth: ReviewerToken contains a line break")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("k8sauth: negative Timeout %s", cfg.Timeout)
	}
	client, err := newHTTPClient(cfg.HTTPClient, cfg.CAPEM)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	return &TokenReviewVerifier{
		url:     strings.TrimSuffix(u.String(), "/") + "/apis/authentication.k8s.io/v1/tokenreviews",
		token:   cfg.ReviewerToken,
		timeout: timeout,
		client:  client,
		now:     time.Now,
	}, nil
}

// Verify checks the token's size and shape locally, then asks the
// apiserver to review it for audience. The apiserver checks the
// signature, issuer, audience and expiry, and that the service account
// (and the pod the token is bound to) still exists. The identity comes
// from the review's status.user; IssuedAt and Expiry from the token's
// claims, read after the apiserver accepted it.
//
// A refusal (status.authenticated false, a user that is not a service
// account, an audience the apiserver did not confirm) wraps
// ErrInvalidToken, and also ErrExpired when the apiserver refused a token
// whose exp has passed; an apiserver that cannot be reached, answers non-2xx or
// unreadably, or not within the timeout, wraps ErrUnavailable.
func (v *TokenReviewVerifier) Verify(ctx context.Context, token, audience string) (Identity, error) {
	if audience == "" {
		return Identity{}, errNoAudience
	}
	p, err := parseToken(token)
	if err != nil {
		return Identity{}, err
	}
	review, err := v.review(ctx, token, audience)
	if err != nil {
		return Identity{}, err
	}
	st := review.Status
	if !st.Authenticated {
		reason := sanitize(st.Error, token, 300)
		if reason == "" {
			reason = "no reason given"
		}
		// The apiserver's reason is free text; the token's own exp (read,
		// not trusted: the token is refused either way) says whether the
		// client should read its projected token again.
		if exp := timeOf(p.claims.Expiry); !exp.IsZero() && v.now().After(exp.Add(Leeway)) {
			return Identity{}, &expiredError{msg: "the apiserver rejected the token, which expired at " + fmtTime(exp) + ": " + reason}
		}
		return Identity{}, invalid("the apiserver rejected the token: %s", reason)
	}
	ns, name, ok := parseSubject(st.User.Username)
	if !ok {
		return Identity{}, invalid("not a service-account token: the apiserver authenticated user %s", quote(sanitize(st.User.Username, token, 128)))
	}
	if !slices.Contains(st.Audiences, audience) {
		return Identity{}, invalid("audience: the apiserver confirmed %s, want %s", quoteList(st.Audiences), quote(audience))
	}
	return Identity{
		Issuer:            p.claims.Issuer,
		Namespace:         ns,
		ServiceAccount:    name,
		ServiceAccountUID: st.User.UID,
		PodName:           first(st.User.Extra[extraPodName]),
		PodUID:            first(st.User.Extra[extraPodUID]),
		Audiences:         slices.Clone(st.Audiences),
		IssuedAt:          timeOf(p.claims.IssuedAt),
		Expiry:            timeOf(p.claims.Expiry),
	}, nil
}

// review posts the TokenReview and decodes the answer.
func (v *TokenReviewVerifier) review(ctx context.Context, token, audience string) (*authv1.TokenReview, error) {
	body, err := json.Marshal(&authv1.TokenReview{
		TypeMeta: metaTokenReview,
		Spec:     authv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if v.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.token)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: no TokenReview answer within %s: %w", ErrUnavailable, v.timeout, ctx.Err())
		}
		return nil, fmt.Errorf("%w: TokenReview: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := readBody(resp)
	if err != nil {
		return nil, unavailable("TokenReview answer (%s): %v", resp.Status, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, unavailable("TokenReview: the apiserver answered %s: %s", resp.Status, statusMessage(b, token))
	}
	var out authv1.TokenReview
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, unavailable("TokenReview answer (%s) is not a TokenReview", resp.Status)
	}
	return &out, nil
}

var metaTokenReview = metav1.TypeMeta{APIVersion: authv1.SchemeGroupVersion.String(), Kind: "TokenReview"}

func first(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}
