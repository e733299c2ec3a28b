// Package rawapi calls a Coffer server's REST API with raw net/http and the
// client package's wire types, for the process-level tests (test/ha,
// test/e2e): they check what goes over the wire, status codes and error
// codes included, rather than what the Go client makes of it.
package rawapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
)

// API is one server's REST API with one token.
type API struct {
	// Base returns the server's base URL (http://127.0.0.1:PORT); a func
	// because a restarted server may listen elsewhere.
	Base  func() string
	Token string
	HC    *http.Client
}

// New returns an API of the server at base that sends token ("" for none).
func New(base func() string, token string) *API {
	return &API{Base: base, Token: token,
		HC: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
}

// At is a Base for a fixed URL.
func At(url string) func() string { return func() string { return url } }

// WithToken is a copy of a (sharing its connections) that sends tok.
func (a *API) WithToken(tok string) *API { return &API{Base: a.Base, Token: tok, HC: a.HC} }

// StatusError is a non-2xx answer.
type StatusError struct {
	Status int
	Body   client.Error
	Raw    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("status %d: %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

// StatusOf returns the HTTP status of err (0: not an answer).
func StatusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// CodeOf returns the error code of err ("" if not an answer).
func CodeOf(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Body.Code
	}
	return ""
}

// Do sends in as JSON (nil: no body) and decodes a 2xx answer into out.
// Non-2xx answers come back as *StatusError; transport failures as they are.
func (a *API) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base()+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	resp, err := a.HC.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Status: resp.StatusCode, Raw: string(raw)}
		var eb client.ErrorBody
		if json.Unmarshal(raw, &eb) == nil {
			se.Body = eb.Error
		}
		return se
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decoding %s %s answer %q: %w", method, path, raw, err)
		}
	}
	return nil
}

// Must is Do that fails the test on any error.
func (a *API) Must(t testing.TB, method, path string, in, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Do(ctx, method, path, in, out); err != nil {
		t.Fatalf("%s %s%s: %v", method, a.Base(), path, err)
	}
}

// Eventually retries Do until it succeeds (a replica may be restarting or
// its etcd member away); it fails the test after patience.
func (a *API) Eventually(t testing.TB, patience time.Duration, method, path string, in, out any) {
	t.Helper()
	err := proc.WaitFor(patience, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return a.Do(ctx, method, path, in, out)
	})
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, a.Base(), path, err)
	}
}

// WantStatus calls and checks a non-2xx answer's status and code.
func (a *API) WantStatus(t testing.TB, method, path string, in any, status int, code string) {
	t.Helper()
	err := a.Do(context.Background(), method, path, in, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != status || se.Body.Code != code {
		t.Fatalf("%s %s: %v; want status %d %s", method, path, err, status, code)
	}
}

// SealStatus reads GET /v1/sys/seal-status.
func (a *API) SealStatus(t testing.TB) client.SealStatus {
	t.Helper()
	var st client.SealStatus
	a.Must(t, "GET", "/v1/sys/seal-status", nil, &st)
	return st
}

// Init initializes the server and returns the shares and root token.
func (a *API) Init(t testing.TB, shares, threshold int) client.InitResponse {
	t.Helper()
	var ir client.InitResponse
	a.Must(t, "POST", "/v1/sys/init", client.InitRequest{Shares: shares, Threshold: threshold}, &ir)
	if len(ir.Shares) != shares || ir.RootToken == "" {
		t.Fatalf("init answered %d shares, root token %q", len(ir.Shares), ir.RootToken)
	}
	return ir
}

// Unseal submits shares in order and fails unless the server is unsealed
// after the last one.
func (a *API) Unseal(t testing.TB, shares ...string) {
	t.Helper()
	var st client.SealStatus
	for _, sh := range shares {
		a.Must(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: sh}, &st)
	}
	if st.Sealed {
		t.Fatalf("still sealed after %d shares: %+v", len(shares), st)
	}
}
