package server_test

import (
	"testing"

	"github.com/cofferkms/coffer/client"
)

// TestSecretRecordsNameWhatWasAsked: the audit record of a secret request
// names the version acted on, also when the read fails (what was asked
// for) and for a destroy (which versions), with the key that wraps it.
func TestSecretRecordsNameWhatWasAsked(t *testing.T) {
	e := newIAMEnv(t, nil)
	var v1, v2 client.SecretVersion
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v1"}}, &v1)
	e.must("POST", "/v1/secrets/data/team-a/db", e.root, client.SecretPutRequest{Fields: map[string]string{"k": "v2"}}, &v2)
	if rec, _ := e.rec.last("secret:Write"); rec.Detail != "secret_version=2" || rec.KeyID != v2.KeyID || rec.Resource != "secret/team-a/db" {
		t.Fatalf("write record: detail %q key %q resource %q", rec.Detail, rec.KeyID, rec.Resource)
	}
	e.must("GET", "/v1/secrets/data/team-a/db?stage=previous", e.root, nil, nil)
	if rec, _ := e.rec.last("secret:Read"); rec.Detail != "secret_version=1" || rec.KeyID != v1.KeyID {
		t.Fatalf("read record: detail %q key %q", rec.Detail, rec.KeyID)
	}
	e.must("POST", "/v1/secrets/destroy/team-a/db", e.root, client.SecretDestroyRequest{Versions: []uint32{1}}, nil)
	if rec, _ := e.rec.last("secret:Delete"); rec.Detail != "destroy secret_versions=1" || rec.Outcome != "ok" {
		t.Fatalf("destroy record: detail %q outcome %q", rec.Detail, rec.Outcome)
	}
	e.wantErr("GET", "/v1/secrets/data/team-a/db?version=1", e.root, nil, 410, "version_destroyed")
	if rec, _ := e.rec.last("secret:Read"); rec.Detail != "requested secret_version=1" || rec.ErrorCode != "version_destroyed" {
		t.Fatalf("failed read record: detail %q code %q", rec.Detail, rec.ErrorCode)
	}
	e.wantErr("GET", "/v1/secrets/data/team-a/db?stage=pending", e.root, nil, 404, "version_not_found")
	if rec, _ := e.rec.last("secret:Read"); rec.Detail != "requested stage=pending" {
		t.Fatalf("failed stage read record: detail %q", rec.Detail)
	}
}
