package ha

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/cofferkms/coffer/test/rawapi"
)

// outcome classifies an answer: ok, refused (a definite answer that nothing
// was applied, 4xx), unknown (no answer, a timeout, a 5xx: it may or may
// not have been applied) or unreached (the connection was refused: no
// server saw the request).
type outcome int

const (
	outOK outcome = iota
	outRefused
	outUnknown
	outUnreached
)

func classify(err error) outcome {
	if err == nil {
		return outOK
	}
	var se *rawapi.StatusError
	if errors.As(err, &se) && se.Status/100 == 4 {
		return outRefused
	}
	// A connection refused never reached a server: nothing was applied.
	if errors.Is(err, syscall.ECONNREFUSED) {
		return outUnreached
	}
	return outUnknown
}

// loadClient talks to every replica with a short per-request timeout, as a
// client under faults would.
type loadClient struct {
	c   *cofferCluster
	hc  *http.Client
	rnd *rand.Rand
}

func newLoadClient(c *cofferCluster, seed uint64) *loadClient {
	return &loadClient{c: c, rnd: rand.New(rand.NewPCG(seed, 14)),
		hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}}
}

// api is replica i's API with token tok on this client's connections.
func (l *loadClient) api(i int, tok string) *rawapi.API {
	return &rawapi.API{Base: rawapi.At(l.c.replicas[i].addr), Token: tok, HC: l.hc}
}

// pick is a random replica index.
func (l *loadClient) pick() int { return l.rnd.IntN(len(l.c.replicas)) }

func (l *loadClient) do(i int, tok, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	return l.api(i, tok).Do(ctx, method, path, in, out)
}

// refusedAuth reports whether err is a refusal of the credential itself:
// 401, 403, or 429 from the failed-authentication budget (which a server
// answers only after the credential failed).
func refusedAuth(err error) bool {
	s := rawapi.StatusOf(err)
	return s == 401 || s == 403 || (s == 429 && rawapi.CodeOf(err) == "too_many_auth_failures")
}

// keyPath is the API path of a key id or alias.
func keyPath(ref string) string { return "/v1/keys/" + url.PathEscape(ref) }
