package secretsync

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cofferkms/coffer/client"
)

// Coffer is what the controller needs from a Coffer server. Every call but
// Login acts with a role token Login returned.
type Coffer interface {
	// Login exchanges a service-account token for a token of role; it
	// returns the token and when it expires (zero: unknown).
	Login(ctx context.Context, role, jwt string) (token string, expires time.Time, err error)
	// SecretGet reads the current version of a secret.
	SecretGet(ctx context.Context, token, name string) (*client.SecretValue, error)
	// SecretWait long-polls the versions of secrets (known maps a name to
	// the version the caller holds, 0 for none) for at most wait.
	SecretWait(ctx context.Context, token string, known map[string]uint32, wait time.Duration) (*WaitResult, error)
}

// WaitResult is the answer of a long-poll: the secrets whose current
// version differs from the one sent (0 and Deleted when there is none any
// more), and the names the caller may not watch.
type WaitResult struct {
	Changed []Change
	Denied  []string
}

// Change is a secret's current version in a WaitResult.
type Change struct {
	Name           string
	CurrentVersion uint32
	Deleted        bool
}

// ClientCoffer implements Coffer with the Go client. NewClient builds a
// client that sends token ("" for none).
type ClientCoffer struct {
	NewClient func(token string) (*client.Client, error)
	// Cluster is the registered cluster name sent with each login
	// (optional).
	Cluster string

	mu      sync.Mutex
	clients map[string]*client.Client // by token
}

func (c *ClientCoffer) client(token string) (*client.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.clients[token]; cl != nil {
		return cl, nil
	}
	cl, err := c.NewClient(token)
	if err != nil {
		return nil, err
	}
	if c.clients == nil {
		c.clients = map[string]*client.Client{}
	}
	// Tokens are replaced before they expire: a handful of live groups,
	// each with at most two tokens around a refresh, is all the map holds
	// once Forget drops the old ones.
	c.clients[token] = cl
	return cl, nil
}

// Forget drops the client of a token that is no longer used.
func (c *ClientCoffer) Forget(token string) {
	c.mu.Lock()
	delete(c.clients, token)
	c.mu.Unlock()
}

// Login implements Coffer.
func (c *ClientCoffer) Login(ctx context.Context, role, jwt string) (string, time.Time, error) {
	anon, err := c.client("")
	if err != nil {
		return "", time.Time{}, err
	}
	resp, err := anon.KubernetesLogin(ctx, client.KubernetesLoginRequest{Role: role, JWT: jwt, Cluster: c.Cluster})
	if err != nil {
		return "", time.Time{}, err
	}
	var exp time.Time
	if resp.ExpiresAt != nil {
		exp = *resp.ExpiresAt
	}
	return resp.Token, exp, nil
}

// SecretGet implements Coffer.
func (c *ClientCoffer) SecretGet(ctx context.Context, token, name string) (*client.SecretValue, error) {
	cl, err := c.client(token)
	if err != nil {
		return nil, err
	}
	return cl.SecretGet(ctx, name, client.SecretGetOptions{})
}

// Revoke revokes a role token that is no longer needed.
func (c *ClientCoffer) Revoke(ctx context.Context, token string) error {
	cl, err := c.client(token)
	if err != nil {
		return err
	}
	return cl.RevokeSelf(ctx)
}

// statusOf is the HTTP status of a Coffer API error, or 0.
func statusOf(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

// conditionText is err's text for a condition message or an event: the
// request id of a Coffer error is left out (it is in the log). Each retry
// gets a new one, so a message holding it would change the status on every
// retry, and the status write's own update event would queue the resource
// again at once, past the backoff.
func conditionText(err error) string {
	text := err.Error()
	var ae *client.APIError
	if errors.As(err, &ae) && ae.RequestID != "" {
		bare := *ae
		bare.RequestID = ""
		text = strings.Replace(text, ae.Error(), bare.Error(), 1)
	}
	return text
}

// reasonOf maps a Coffer error to a condition reason.
func reasonOf(err error) string {
	switch statusOf(err) {
	case http.StatusUnauthorized, http.StatusForbidden:
		return ReasonForbidden
	case http.StatusNotFound, http.StatusGone:
		return ReasonNotFound
	}
	return ReasonError
}
