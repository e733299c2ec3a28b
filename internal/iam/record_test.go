package iam

import (
	"encoding/json"
	"testing"
)

// TestStoredRecordsUnchanged: policy, role and cluster records as the code
// before the IAM service had its own types (it stored the client's wire
// types) wrote them still decode into the service's types, and encode
// again to the same bytes. Access key records have had their own type
// (accessKeyRecord) all along; one is pinned here too.
func TestStoredRecordsUnchanged(t *testing.T) {
	for _, c := range []struct {
		name string
		raw  string
		v    any
	}{
		{"policy", `{"name":"kms-use","description":"encrypt and decrypt","document":"statements:\n- effect: allow\n  actions: [kms:Encrypt]\n  resources: ['*']\n",` +
			`"created_at":"2026-01-02T03:04:05.123456789Z","updated_at":"2026-01-03T00:00:00Z"}`, &Policy{}},
		{"minimal policy", `{"name":"p","document":""}`, &Policy{}},
		{"role", `{"name":"ci","description":"the CI runners","policies":["kms-use","secrets-read"],"ttl":"15m","max_ttl":"1h",` +
			`"trust_principals":["access-key:*","role:ci-*"],` +
			`"kubernetes":[{"cluster":"prod","namespace":"ci","service_account":"runner","audience":"coffer"},{"cluster":"*","namespace":"x","service_account":"y"}],` +
			`"certificates":[{"common_name":"ci.example.com"},{"dns_name":"*.ci.example.com"}],` +
			`"bound_cidrs":["10.0.0.0/8"],"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:06Z"}`, &Role{}},
		{"minimal role", `{"name":"r","policies":null}`, &Role{}},
		{"cluster", `{"name":"prod","mode":"tokenreview","issuer":"https://kubernetes.default.svc","jwks":"{\"keys\":[]}",` +
			`"discovery_url":"https://prod.example.com","api_server":"https://10.0.0.1:6443","ca_cert":"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n",` +
			`"reviewer_token":"eyJhbGciOi","created_at":"2026-01-02T03:04:05Z"}`, &Cluster{}},
		{"access key", `{"id":"cfak_x","hash":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","description":"d","policies":["p"],"disabled":true,"leaked":true,` +
			`"created_at":"2026-01-02T03:04:05Z","expires_at":"2026-04-02T03:04:05Z","last_used_at":"2026-01-05T00:00:00Z","last_source":"10.0.0.7"}`, &accessKeyRecord{}},
	} {
		if err := json.Unmarshal([]byte(c.raw), c.v); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out, err := json.Marshal(c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(out) != c.raw {
			t.Errorf("%s: re-encoded as\n%s\nnot\n%s", c.name, out, c.raw)
		}
	}
}
