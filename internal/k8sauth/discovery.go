package k8sauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// DefaultDiscoveryTimeout bounds Discover when DiscoveryConfig.Timeout is
// zero.
const DefaultDiscoveryTimeout = 10 * time.Second

// DiscoveryConfig configures Discover.
type DiscoveryConfig struct {
	// URL is where the discovery document is served: the apiserver
	// (https://HOST[:PORT]) or the issuer URL when it is published
	// elsewhere. Discover reads URL/.well-known/openid-configuration.
	URL string
	// CAPEM holds the CA certificates to trust (PEM); empty means the
	// system roots. Not with HTTPClient.
	CAPEM []byte
	// BearerToken authenticates to the apiserver, which serves discovery
	// to service accounts (ClusterRole system:service-account-issuer-discovery)
	// but to anonymous clients only when an administrator allowed it. It is
	// sent to URL, and to jwks_uri only when that is on the same origin
	// (scheme, host and port) as URL.
	BearerToken string
	// JWKSURL, when set, is fetched instead of the document's jwks_uri.
	// kube-apiserver advertises jwks_uri at its external host
	// (--external-hostname, by default its advertise address) or at
	// --service-account-jwks-uri, which may not be reachable from Coffer.
	JWKSURL string
	// Timeout bounds the whole discovery (DefaultDiscoveryTimeout when
	// zero).
	Timeout time.Duration
	// HTTPClient replaces the client built from CAPEM. Redirects are never
	// followed either way.
	HTTPClient *http.Client
}

// Discover reads the OIDC discovery document at
// cfg.URL/.well-known/openid-configuration, then the JSON Web Key Set at
// its jwks_uri (or cfg.JWKSURL), and returns the issuer and the key set,
// checked as NewJWKSVerifier checks it. Each response is bounded to 1 MiB.
// Failing to reach a server or a non-2xx answer wraps ErrUnavailable.
func Discover(ctx context.Context, cfg DiscoveryConfig) (issuer string, jwks []byte, err error) {
	base, err := parseHTTPSURL("discovery URL", cfg.URL)
	if err != nil {
		return "", nil, err
	}
	if strings.ContainsAny(cfg.BearerToken, "\r\n") {
		return "", nil, errors.New("k8sauth: BearerToken contains a line break")
	}
	client, err := newHTTPClient(cfg.HTTPClient, cfg.CAPEM)
	if err != nil {
		return "", nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultDiscoveryTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	docURL := strings.TrimSuffix(base.String(), "/") + "/.well-known/openid-configuration"
	b, err := get(ctx, client, docURL, "application/json", cfg.BearerToken)
	if err != nil {
		return "", nil, err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", nil, fmt.Errorf("k8sauth: %s is not an OpenID configuration document: %v", docURL, err)
	}
	if doc.Issuer == "" {
		return "", nil, fmt.Errorf("k8sauth: %s has no issuer", docURL)
	}
	jwksURL := cfg.JWKSURL
	if jwksURL == "" {
		if jwksURL = doc.JWKSURI; jwksURL == "" {
			return "", nil, fmt.Errorf("k8sauth: %s has no jwks_uri", docURL)
		}
	}
	ju, err := parseHTTPSURL("jwks_uri", jwksURL)
	if err != nil {
		return "", nil, err
	}
	token := ""
	if ju.Scheme == base.Scheme && strings.EqualFold(ju.Host, base.Host) {
		token = cfg.BearerToken
	}
	// kube-apiserver answers 406 unless the key set's media type is
	// acceptable.
	if jwks, err = get(ctx, client, ju.String(), "application/jwk-set+json, application/json", token); err != nil {
		return "", nil, err
	}
	if _, err := parseJWKS(jwks); err != nil {
		return "", nil, fmt.Errorf("%w (from %s)", err, ju.Redacted())
	}
	return doc.Issuer, jwks, nil
}

// get fetches url accepting the media types accept, with an optional
// bearer token, and returns the bounded body of a 2xx answer.
func get(ctx context.Context, client *http.Client, url, accept, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := readBody(resp)
	if err != nil {
		return nil, unavailable("GET %s (%s): %v", url, resp.Status, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (discovery needs a BearerToken of a service account, or anonymous discovery enabled on the cluster)"
		}
		return nil, unavailable("GET %s: %s: %s%s", url, resp.Status, statusMessage(b, token), hint)
	}
	return b, nil
}
