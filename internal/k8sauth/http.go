package k8sauth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxResponseSize bounds every response read from an apiserver or
// discovery endpoint.
const maxResponseSize = 1 << 20

var errTooLarge = fmt.Errorf("response is larger than %d bytes", maxResponseSize)

// newHTTPClient returns custom, or a client trusting caPEM (the system
// roots when it is empty). Either way redirects are not followed: a
// request carrying a token is sent only where it was addressed.
func newHTTPClient(custom *http.Client, caPEM []byte) (*http.Client, error) {
	var c http.Client
	switch {
	case custom != nil && len(caPEM) > 0:
		return nil, errors.New("k8sauth: set CAPEM or HTTPClient, not both")
	case custom != nil:
		c = *custom
	default:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if len(caPEM) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(caPEM) {
				return nil, errors.New("k8sauth: CAPEM holds no PEM certificate")
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		c.Transport = tr
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c, nil
}

// parseHTTPSURL checks that s is an absolute https URL.
func parseHTTPSURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("k8sauth: %s %q is not a URL: %v", what, s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("k8sauth: %s %q must be an absolute https:// URL", what, s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("k8sauth: %s %q must not have user info, a query or a fragment", what, s)
	}
	return u, nil
}

// readBody reads at most maxResponseSize bytes of resp's body.
func readBody(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxResponseSize {
		return nil, errTooLarge
	}
	return b, nil
}

// statusMessage is the message of a Kubernetes Status body, or a bit of
// the body, sanitized.
func statusMessage(body []byte, token string) string {
	var st struct {
		Message string `json:"message"`
	}
	msg := string(body)
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		msg = st.Message
	}
	if msg = sanitize(msg, token, 200); msg == "" {
		return "(no message)"
	}
	return msg
}
