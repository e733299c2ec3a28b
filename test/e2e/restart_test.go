package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/rawapi"
)

// sealedText is a ciphertext and what it must decrypt to.
type sealedText struct {
	ct, pt  []byte
	ec      map[string]string
	keyID   string
	version uint32
}

func encryptText(t *testing.T, api *rawapi.API, keyRef, text string, ec map[string]string) sealedText {
	t.Helper()
	var r client.EncryptResponse
	api.Must(t, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: keyRef, Plaintext: []byte(text), Context: ec}, &r)
	return sealedText{ct: r.Ciphertext, pt: []byte(text), ec: ec, keyID: r.KeyID, version: r.KeyVersion}
}

func checkDecrypts(t *testing.T, api *rawapi.API, texts []sealedText) {
	t.Helper()
	for _, s := range texts {
		var d client.DecryptResponse
		api.Must(t, "POST", "/v1/kms/decrypt", client.DecryptRequest{Ciphertext: s.ct, Context: s.ec}, &d)
		if !bytes.Equal(d.Plaintext, s.pt) || d.KeyID != s.keyID || d.KeyVersion != s.version {
			t.Errorf("decrypt: %q under %s v%d, want %q under %s v%d", d.Plaintext, d.KeyID, d.KeyVersion, s.pt, s.keyID, s.version)
		}
	}
}

// TestRestartProduction: a production server (config file) unsealed with 3
// of 5 shares keeps its keys and ciphertexts across a graceful restart and
// comes back sealed.
func TestRestartProduction(t *testing.T) {
	dir := t.TempDir()
	srv := StartServer(t, "--config", writeConfig(t, dir))
	api := newAPI(srv, "")

	st := api.SealStatus(t)
	if st.Initialized || !st.Sealed {
		t.Fatalf("fresh server: %+v", st)
	}
	ir := api.Init(t, 5, 3)
	st = api.SealStatus(t)
	if !st.Initialized || !st.Sealed || st.Shares != 5 || st.Threshold != 3 || st.Progress != 0 {
		t.Fatalf("after init: %+v", st)
	}

	// Unseal step by step; a repeated share does not count twice.
	unsealStep := func(share string, wantProgress int, wantSealed bool) {
		t.Helper()
		var st client.SealStatus
		api.Must(t, "POST", "/v1/sys/unseal", client.UnsealRequest{Share: share}, &st)
		if st.Sealed != wantSealed || st.Progress != wantProgress || st.Threshold != 3 {
			t.Fatalf("after a share: %+v, want sealed=%v progress %d/3", st, wantSealed, wantProgress)
		}
	}
	unsealStep(ir.Shares[0], 1, true)
	unsealStep(ir.Shares[0], 1, true) // the same share again
	unsealStep(ir.Shares[1], 2, true)
	unsealStep(ir.Shares[1], 2, true)
	unsealStep(ir.Shares[2], 0, false)
	api.Token = ir.RootToken

	// Keys, ciphertexts, a rotation, more ciphertexts.
	var app, other client.Key
	api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Alias: "alias/app", Description: "restart test", RotationPeriod: "90d"}, &app)
	api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{}, &other)
	var texts []sealedText
	texts = append(texts,
		encryptText(t, api, "alias/app", "first secret", map[string]string{"tenant": "acme"}),
		encryptText(t, api, other.ID, "other secret", nil))
	var dk client.DataKeyResponse
	api.Must(t, "POST", "/v1/kms/datakey", client.DataKeyRequest{KeyID: "alias/app", Context: map[string]string{"file": "a.txt"}}, &dk)
	texts = append(texts, sealedText{ct: dk.Ciphertext, pt: dk.Plaintext, ec: map[string]string{"file": "a.txt"}, keyID: dk.KeyID, version: dk.KeyVersion})
	var rotated client.Key
	api.Must(t, "POST", "/v1/keys/"+app.ID+"/rotate", nil, &rotated)
	if rotated.PrimaryVersion != 2 {
		t.Fatalf("after rotate: primary version %d", rotated.PrimaryVersion)
	}
	texts = append(texts, encryptText(t, api, "alias/app", "second secret", map[string]string{"tenant": "acme"}))
	if texts[0].version != 1 || texts[3].version != 2 {
		t.Fatalf("versions %d and %d, want 1 and 2", texts[0].version, texts[3].version)
	}
	// A token carrying a policy that allows decrypting with alias/app only:
	// the policy, its attachment and the token must all survive.
	api.Must(t, "PUT", "/v1/policies/decrypt-app", client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Decrypt]\n    resources: [alias/app]\n"}, nil)
	api.Must(t, "POST", "/v1/roles", client.Role{Name: "app", Policies: []string{"decrypt-app"}}, nil)
	var user client.CreateTokenResponse
	api.Must(t, "POST", "/v1/auth/token/create", client.CreateTokenRequest{DisplayName: "app", TTL: "1h", Policies: []string{"decrypt-app"}}, &user)
	checkDecrypts(t, api, texts)

	// Graceful stop and start: sealed, data calls refused, shares still work.
	srv.Stop()
	srv.Restart()
	api.HC.CloseIdleConnections()
	st = api.SealStatus(t)
	if !st.Initialized || !st.Sealed || st.Progress != 0 || st.Shares != 5 || st.Threshold != 3 {
		t.Fatalf("after restart: %+v, want initialized and sealed", st)
	}
	api.WantStatus(t, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")}, http.StatusServiceUnavailable, "sealed")
	api.WantStatus(t, "POST", "/v1/kms/decrypt", client.DecryptRequest{Ciphertext: texts[0].ct, Context: texts[0].ec}, http.StatusServiceUnavailable, "sealed")
	api.WantStatus(t, "GET", "/v1/keys", nil, http.StatusServiceUnavailable, "sealed")
	api.WantStatus(t, "POST", "/v1/sys/init", client.InitRequest{Shares: 1, Threshold: 1}, http.StatusConflict, "already_initialized")
	// Another three of the five shares.
	api.Unseal(t, ir.Shares[4], ir.Shares[3], ir.Shares[1])

	checkDecrypts(t, api, texts)
	var k client.Key
	api.Must(t, "GET", "/v1/keys/alias%2Fapp", nil, &k)
	if k.ID != app.ID || k.PrimaryVersion != 2 || len(k.Versions) != 2 || k.RotationPeriod != "90d" || k.Description != "restart test" {
		t.Errorf("after restart: %+v", k)
	}
	// The token made before the restart still works.
	userAPI := &rawapi.API{Base: api.Base, Token: user.Token, HC: api.HC}
	var ti client.TokenInfo
	userAPI.Must(t, "GET", "/v1/auth/token/lookup-self", nil, &ti)
	if ti.Root || ti.Accessor != user.Accessor {
		t.Errorf("lookup-self: %+v", ti)
	}
	checkDecrypts(t, userAPI, texts[:1])
	userAPI.WantStatus(t, "POST", "/v1/kms/decrypt", client.DecryptRequest{Ciphertext: texts[1].ct}, http.StatusForbidden, "permission_denied")
	var role client.Role
	api.Must(t, "GET", "/v1/roles/app", nil, &role)
	if len(role.Policies) != 1 || role.Policies[0] != "decrypt-app" {
		t.Errorf("role after restart: %+v", role)
	}
}

// TestRestartDev: a dev server on a kept directory comes back unsealed, with
// the same --dev-root-token working and old ciphertexts decrypting, after a
// graceful stop and after a SIGKILL.
func TestRestartDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	const token = "dev-root-token-for-e2e"
	srv := StartServer(t, "--dev", "--dev-dir", dir, "--dev-root-token", token, "--listen", "127.0.0.1:0")
	if got := srv.OutputLine("Root token:"); got != token {
		t.Errorf("banner root token %q, want %q", got, token)
	}
	api := newAPI(srv, token)
	st := api.SealStatus(t)
	if !st.Initialized || st.Sealed {
		t.Fatalf("dev server: %+v", st)
	}
	var key client.Key
	api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Alias: "alias/demo"}, &key)
	texts := []sealedText{encryptText(t, api, "alias/demo", "hello, coffer", map[string]string{"env": "dev"})}
	api.Must(t, "POST", "/v1/keys/alias%2Fdemo/rotate", nil, nil)
	texts = append(texts, encryptText(t, api, key.ID, "after rotation", nil))

	for _, stop := range []struct {
		name string
		fn   func()
	}{{"SIGTERM", srv.Stop}, {"SIGKILL", srv.Kill}} {
		stop.fn()
		srv.Restart()
		api.HC.CloseIdleConnections()
		st := api.SealStatus(t)
		if !st.Initialized || st.Sealed {
			t.Fatalf("dev server after %s: %+v, want unsealed", stop.name, st)
		}
		if !strings.HasPrefix(srv.Addr, "http://127.0.0.1:") {
			t.Fatalf("address %q", srv.Addr)
		}
		var ti client.TokenInfo
		api.Must(t, "GET", "/v1/auth/token/lookup-self", nil, &ti)
		if !ti.Root {
			t.Fatalf("after %s the dev root token is not root: %+v", stop.name, ti)
		}
		checkDecrypts(t, api, texts)
		var k client.Key
		api.Must(t, "GET", "/v1/keys/alias%2Fdemo", nil, &k)
		if k.ID != key.ID || k.PrimaryVersion != 2 {
			t.Fatalf("after %s: %+v", stop.name, k)
		}
		texts = append(texts, encryptText(t, api, "alias/demo", "written after "+stop.name, nil))
	}
	if _, err := os.Stat(filepath.Join(dir, "coffer.db")); err != nil {
		t.Errorf("dev store: %v", err)
	}
}
