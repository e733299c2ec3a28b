package client

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestFailoverOrder: the preferred endpoint first, then the others in the
// given order, those in back-off last.
func TestFailoverOrder(t *testing.T) {
	c, err := New("http://a:1,http://b:2,http://c:3,http://d:4")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if got := c.order(now); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("order = %v, want 0 1 2 3", got)
	}
	c.pref.Store(2)
	if got := c.order(now); !slices.Equal(got, []int{2, 3, 0, 1}) {
		t.Errorf("order with c preferred = %v, want 2 3 0 1", got)
	}
	c.endpoints[3].downUntil.Store(now.Add(time.Second).UnixNano())
	c.endpoints[2].downUntil.Store(now.Add(time.Second).UnixNano())
	if got := c.order(now); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("order with c and d in back-off = %v, want 0 1 2 3", got)
	}
	if got := c.order(now.Add(2 * time.Second)); !slices.Equal(got, []int{2, 3, 0, 1}) {
		t.Errorf("order after the back-off = %v, want 2 3 0 1", got)
	}
}

// TestRetrySafe: which requests may be sent again after an ambiguous failure.
func TestRetrySafe(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		method, path string
		safe         bool
	}{
		{http.MethodGet, "/v1/keys", true},
		{http.MethodGet, "/readyz", true},
		{http.MethodPost, "/v1/kms/encrypt", true},
		{http.MethodPost, "/v1/kms/decrypt/batch", true},
		{http.MethodPost, "/v1/kms/generate-random", true},
		{http.MethodPost, "/v1/auth/token/lookup", true},
		{http.MethodPost, "/v1/policies/simulate", true},
		{http.MethodPost, "/v1/sys/audit/hash", true},
		{http.MethodPost, "/v1/keys", false},
		{http.MethodPost, "/v1/keys/k/rotate", false},
		{http.MethodPut, "/v1/policies/p", false},
		{http.MethodDelete, "/v1/aliases/a", false},
		{http.MethodPatch, "/v1/access-keys/x", false},
		{http.MethodPost, "/v1/auth/token/revoke", false},
		{http.MethodPost, "/v1/auth/token/create", false},
		{http.MethodPost, "/v1/auth/kubernetes/login", false},
		{http.MethodPost, "/v1/sys/unseal", false},
		{http.MethodPost, "/v1/sys/rotate-keyring", false},
	} {
		if got := retrySafe(ctx, tc.method, tc.path); got != tc.safe {
			t.Errorf("retrySafe(%s %s) = %v, want %v", tc.method, tc.path, got, tc.safe)
		}
	}
	if !retrySafe(Idempotent(ctx), http.MethodPut, "/v1/policies/p") {
		t.Error("a request marked Idempotent is not safe to repeat")
	}
}

// TestReplicaUnavailable: which answers send a safe request to the next
// endpoint.
func TestReplicaUnavailable(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
		want   bool
	}{
		{503, "sealed", true},
		{503, "replica_stale", true},
		{503, "not_initialized", true},
		{503, "audit_unavailable", true},
		{503, "", true},
		{502, "", true},
		{504, "", true},
		{503, "cluster_unavailable", false}, // the Kubernetes API, the same for every replica
		{500, "internal", false},
		{502, "something", false},
		{404, "key_not_found", false},
		{429, "too_many_auth_failures", false},
	} {
		if got := replicaUnavailable(&APIError{StatusCode: tc.status, Code: tc.code}); got != tc.want {
			t.Errorf("replicaUnavailable(%d %q) = %v, want %v", tc.status, tc.code, got, tc.want)
		}
	}
}
