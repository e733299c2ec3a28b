package server_test

import (
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// A list shows only the names the caller may List: the prefix is a gate,
// each name is checked against the caller's globs and denies.
func TestSecretListFiltersByPolicy(t *testing.T) {
	e := newIAMEnv(t, nil)
	for _, n := range []string{"team-a/app", "team-a/app-admin/root", "team-a/private/x", "team-a/pub"} {
		e.must("POST", "/v1/secrets/data/"+n, e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	}
	one := e.policyToken("one", "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/team-a/app\"]\n")
	deny := e.policyToken("deny", "statements:\n  - effect: allow\n    actions: [secret:List]\n    resources: [\"secret/team-a/*\"]\n"+
		"  - effect: deny\n    actions: [secret:List]\n    resources: [\"secret/team-a/private/*\"]\n")
	for _, c := range []struct {
		tok, prefix, leak, want string
	}{
		{one, "team-a/app", "team-a/app-admin/root", "team-a/app"},
		{deny, "team-a/", "team-a/private/x", "team-a/pub"},
		{deny, "team-a/pri", "team-a/private/x", ""},
	} {
		st, raw := e.call("GET", "/v1/secrets?prefix="+c.prefix, c.tok, nil)
		if st != 200 {
			t.Errorf("list prefix %q: %d %s", c.prefix, st, raw)
			continue
		}
		if strings.Contains(string(raw), c.leak) {
			t.Errorf("list prefix %q leaks %s: %s", c.prefix, c.leak, raw)
		}
		if c.want != "" && !strings.Contains(string(raw), `"`+c.want+`"`) {
			t.Errorf("list prefix %q lost the allowed %s: %s", c.prefix, c.want, raw)
		}
	}
}

// The stage a read asks for is bounded before it is recorded.
func TestSecretReadRecordBoundsStage(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/secrets/data/a/b", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v"}}, nil)
	e.wantErr("GET", "/v1/secrets/data/a/b?stage="+strings.Repeat("x", 60000), e.root, nil, 400, "invalid_request")
	if rec, _ := e.rec.last("secret:Read"); len(rec.Detail) > 256 {
		t.Fatalf("the read record holds a %d-byte detail chosen by the caller", len(rec.Detail))
	}
}
