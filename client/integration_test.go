package client_test

// Integration tests: every Client method against a real Coffer server
// (internal/server.Run) on a free loopback port, in dev mode (initialized and
// unsealed at start), in production mode (init and unseal through the
// client) and over TLS with a self-signed certificate.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/server"
)

// testTimeout bounds each test's calls.
const testTimeout = 30 * time.Second

// startServer runs server.Run with cfg on 127.0.0.1:0 until the test ends
// and returns its banner.
func startServer(t *testing.T, cfg server.Config) server.Banner {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- server.Run(ctx, cfg, logger, func(b server.Banner) { ready <- b })
	}()
	var ban server.Banner
	select {
	case ban = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v", err)
	case <-time.After(testTimeout):
		cancel()
		t.Fatal("server did not start in time")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server stopped with: %v", err)
		}
	})
	return ban
}

// startDev starts a dev server (TLS auto when useTLS) in a temporary
// directory and returns a root client for it and its banner.
// keysUserPolicy lets a token use and manage every key.
const keysUserPolicy = `statements:
  - effect: allow
    actions: ["kms:*", "key:*"]
    resources: ["*"]
`

func startDev(t *testing.T, useTLS bool) (*client.Client, server.Banner) {
	t.Helper()
	var cfg server.Config
	cfg.Dev, cfg.DevDir = true, t.TempDir()
	cfg.TLS.Auto = useTLS
	ban := startServer(t, cfg)
	if ban.RootToken == "" {
		t.Fatal("dev server reported no root token")
	}
	if useTLS && ban.CACertFile == "" {
		t.Fatal("TLS server reported no certificate file")
	}
	c, err := client.New(ban.Addr, client.WithToken(ban.RootToken), client.WithCACertFile(ban.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return c, ban
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantAPIError fails unless err is an *APIError with the status and code.
func wantAPIError(t *testing.T, what string, err error, status int, code string) *client.APIError {
	t.Helper()
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("%s: err = %v (%T), want an *APIError %d %s", what, err, err, status, code)
	}
	if apiErr.StatusCode != status || apiErr.Code != code {
		t.Fatalf("%s: got %d %s (%s), want %d %s", what, apiErr.StatusCode, apiErr.Code, apiErr.Message, status, code)
	}
	if apiErr.Message == "" || apiErr.RequestID == "" {
		t.Errorf("%s: message %q, request id %q: want both", what, apiErr.Message, apiErr.RequestID)
	}
	return apiErr
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// TestIntegrationSys drives a production-mode server through init, unseal,
// seal and unseal again, with the errors on the way.
func TestIntegrationSys(t *testing.T) {
	t.Parallel()
	var cfg server.Config
	cfg.Storage.Path = filepath.Join(t.TempDir(), "coffer.db")
	ban := startServer(t, cfg)
	ctx := testContext(t)
	c, err := client.New(ban.Addr)
	if err != nil {
		t.Fatal(err)
	}

	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	if ready, err := c.Ready(ctx); err != nil || ready {
		t.Fatalf("Ready before init = %v, %v; want false, nil", ready, err)
	}
	st := must[*client.SealStatus](t, "SealStatus")(c.SealStatus(ctx))
	if st.Initialized || !st.Sealed {
		t.Fatalf("status before init = %+v", st)
	}
	_, err = c.ListKeys(ctx)
	wantAPIError(t, "ListKeys before init", err, http.StatusServiceUnavailable, "not_initialized")

	_, err = c.Init(ctx, client.InitRequest{Shares: 2, Threshold: 3})
	wantAPIError(t, "Init threshold > shares", err, http.StatusBadRequest, "invalid_request")

	ini := must[*client.InitResponse](t, "Init")(c.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2}))
	if len(ini.Shares) != 3 || !strings.HasPrefix(ini.RootToken, "cft_") {
		t.Fatalf("Init = %d shares, root token %q", len(ini.Shares), ini.RootToken)
	}
	_, err = c.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	wantAPIError(t, "second Init", err, http.StatusConflict, "already_initialized")

	st = must[*client.SealStatus](t, "SealStatus")(c.SealStatus(ctx))
	if !st.Initialized || !st.Sealed || st.Shares != 3 || st.Threshold != 2 || st.Progress != 0 {
		t.Fatalf("status after init = %+v", st)
	}
	c.SetToken(ini.RootToken)
	_, err = c.ListKeys(ctx)
	wantAPIError(t, "ListKeys while sealed", err, http.StatusServiceUnavailable, "sealed")

	// Bad shares count for nothing.
	_, err = c.Unseal(ctx, client.UnsealRequest{Share: "garbage!"})
	wantAPIError(t, "Unseal garbage", err, http.StatusBadRequest, "invalid_share")
	bad := []byte(ini.Shares[0])
	bad[10] ^= 1 // still base64, checksum no longer matches
	if bad[10] == '+' || bad[10] == '/' || bad[10] == '=' {
		bad[10] = 'A'
	}
	_, err = c.Unseal(ctx, client.UnsealRequest{Share: string(bad)})
	wantAPIError(t, "Unseal altered share", err, http.StatusBadRequest, "invalid_share")
	_, err = c.Unseal(ctx, client.UnsealRequest{})
	wantAPIError(t, "Unseal without share", err, http.StatusBadRequest, "invalid_request")

	// Progress, reset, then the threshold.
	st = must[*client.SealStatus](t, "Unseal 1")(c.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]}))
	if !st.Sealed || st.Progress != 1 {
		t.Fatalf("after one share: %+v", st)
	}
	st = must[*client.SealStatus](t, "Unseal reset")(c.Unseal(ctx, client.UnsealRequest{Reset: true}))
	if !st.Sealed || st.Progress != 0 {
		t.Fatalf("after reset: %+v", st)
	}
	must[*client.SealStatus](t, "Unseal 1")(c.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[0]}))
	st = must[*client.SealStatus](t, "Unseal 2")(c.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[2]}))
	if st.Sealed {
		t.Fatalf("after two shares: %+v", st)
	}
	if ready, err := c.Ready(ctx); err != nil || !ready {
		t.Fatalf("Ready after unseal = %v, %v", ready, err)
	}
	ti := must[*client.TokenInfo](t, "LookupSelf")(c.LookupSelf(ctx))
	if !ti.Root || ti.ExpiresAt != nil {
		t.Fatalf("root token info = %+v", ti)
	}
	key := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{}))
	enc := must[*client.EncryptResponse](t, "Encrypt")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("survives a seal")}))

	// Seal needs the root token.
	anon := must[*client.Client](t, "New")(client.New(ban.Addr))
	wantAPIError(t, "Seal without token", anon.Seal(ctx), http.StatusUnauthorized, "unauthenticated")
	child := must[*client.CreateTokenResponse](t, "CreateToken")(c.CreateToken(ctx, client.CreateTokenRequest{TTL: "1h"}))
	limited := must[*client.Client](t, "New")(client.New(ban.Addr, client.WithToken(child.Token)))
	wantAPIError(t, "Seal with a non-root token", limited.Seal(ctx), http.StatusForbidden, "permission_denied")
	if err := c.Seal(ctx); err != nil {
		t.Fatalf("Seal: %v", err)
	}
	st = must[*client.SealStatus](t, "SealStatus")(c.SealStatus(ctx))
	if !st.Sealed || !st.Initialized {
		t.Fatalf("after seal: %+v", st)
	}
	if ready, err := c.Ready(ctx); err != nil || ready {
		t.Fatalf("Ready after seal = %v, %v", ready, err)
	}
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext})
	wantAPIError(t, "Decrypt while sealed", err, http.StatusServiceUnavailable, "sealed")
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health while sealed: %v", err)
	}

	// The other two shares unseal it again, with the same keys and tokens.
	must[*client.SealStatus](t, "Unseal 2")(c.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[1]}))
	st = must[*client.SealStatus](t, "Unseal 3")(c.Unseal(ctx, client.UnsealRequest{Share: ini.Shares[2]}))
	if st.Sealed {
		t.Fatalf("after unsealing again: %+v", st)
	}
	dec := must[*client.DecryptResponse](t, "Decrypt")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext}))
	if string(dec.Plaintext) != "survives a seal" {
		t.Fatalf("Decrypt after unseal = %q", dec.Plaintext)
	}
	if _, err := limited.LookupSelf(ctx); err != nil {
		t.Fatalf("child token after unseal: %v", err)
	}
}

// TestIntegrationKeys covers the key and alias methods and their errors.
func TestIntegrationKeys(t *testing.T) {
	t.Parallel()
	c, _ := startDev(t, false)
	ctx := testContext(t)

	if l := must[*client.KeyList](t, "ListKeys")(c.ListKeys(ctx)); len(l.Keys) != 0 {
		t.Fatalf("ListKeys on a new server = %d keys", len(l.Keys))
	}
	k := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{
		Alias:          "alias/payments",
		Description:    "card numbers",
		RotationPeriod: "90d",
		Tags:           map[string]string{"team": "payments", "env": "prod"},
	}))
	if k.ID == "" || k.State != client.KeyEnabled || k.PrimaryVersion != 1 || len(k.Versions) != 1 ||
		k.RotationPeriod != "90d" || k.NextRotationAt == nil || k.DeletionDate != nil ||
		!slices.Equal(k.Aliases, []string{"alias/payments"}) || k.Description != "card numbers" || k.Tags["team"] != "payments" {
		t.Fatalf("CreateKey = %+v", k)
	}
	if want := k.CreatedAt.Add(90 * 24 * time.Hour); !k.NextRotationAt.Equal(want) {
		t.Errorf("NextRotationAt = %v, want %v", k.NextRotationAt, want)
	}
	plain := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{}))

	l := must[*client.KeyList](t, "ListKeys")(c.ListKeys(ctx))
	if len(l.Keys) != 2 || l.Keys[0].ID != k.ID || l.Keys[1].ID != plain.ID {
		t.Fatalf("ListKeys = %+v", l.Keys)
	}
	for _, ref := range []string{k.ID, "alias/payments"} {
		d := must[*client.Key](t, "DescribeKey "+ref)(c.DescribeKey(ctx, ref))
		if d.ID != k.ID || d.Description != "card numbers" {
			t.Fatalf("DescribeKey(%s) = %+v", ref, d)
		}
	}

	// UpdateKey changes only the fields given.
	desc := "card numbers, v2"
	u := must[*client.Key](t, "UpdateKey")(c.UpdateKey(ctx, "alias/payments", client.UpdateKeyRequest{Description: &desc}))
	if u.Description != desc || u.RotationPeriod != "90d" || u.Tags["env"] != "prod" {
		t.Fatalf("UpdateKey description = %+v", u)
	}
	period, tags := "30d", map[string]string{"team": "billing"}
	u = must[*client.Key](t, "UpdateKey")(c.UpdateKey(ctx, k.ID, client.UpdateKeyRequest{RotationPeriod: &period, Tags: &tags}))
	if u.Description != desc || u.RotationPeriod != "30d" || len(u.Tags) != 1 || u.Tags["team"] != "billing" {
		t.Fatalf("UpdateKey period and tags = %+v", u)
	}
	off := ""
	u = must[*client.Key](t, "UpdateKey")(c.UpdateKey(ctx, k.ID, client.UpdateKeyRequest{RotationPeriod: &off}))
	if u.RotationPeriod != "" || u.NextRotationAt != nil {
		t.Fatalf("UpdateKey rotation off = %+v", u)
	}
	short := "10s"
	_, err := c.UpdateKey(ctx, k.ID, client.UpdateKeyRequest{RotationPeriod: &short})
	wantAPIError(t, "UpdateKey 10s", err, http.StatusBadRequest, "invalid_request")
	_, err = c.CreateKey(ctx, client.CreateKeyRequest{RotationPeriod: "10s"})
	wantAPIError(t, "CreateKey 10s", err, http.StatusBadRequest, "invalid_request")

	// Disable / enable.
	ct := must[*client.EncryptResponse](t, "Encrypt")(c.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}))
	if d := must[*client.Key](t, "DisableKey")(c.DisableKey(ctx, "alias/payments")); d.State != client.KeyDisabled {
		t.Fatalf("DisableKey state = %s", d.State)
	}
	_, err = c.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/payments", Plaintext: []byte("x")})
	if e := wantAPIError(t, "Encrypt with a disabled key", err, http.StatusConflict, "key_disabled"); !strings.Contains(e.Message, k.ID) {
		t.Errorf("disabled message %q does not name the key", e.Message)
	}
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: ct.Ciphertext})
	wantAPIError(t, "Decrypt with a disabled key", err, http.StatusConflict, "key_disabled")
	_, err = c.RotateKey(ctx, k.ID)
	wantAPIError(t, "RotateKey disabled", err, http.StatusConflict, "invalid_key_state")
	if e := must[*client.Key](t, "EnableKey")(c.EnableKey(ctx, k.ID)); e.State != client.KeyEnabled {
		t.Fatalf("EnableKey state = %s", e.State)
	}

	// Rotate.
	r := must[*client.Key](t, "RotateKey")(c.RotateKey(ctx, "alias/payments"))
	if r.PrimaryVersion != 2 || len(r.Versions) != 2 || r.Versions[1].Version != 2 {
		t.Fatalf("RotateKey = %+v", r)
	}

	// Schedule and cancel deletion.
	_, err = c.ScheduleKeyDeletion(ctx, k.ID, client.ScheduleDeletionRequest{PendingDays: 3})
	wantAPIError(t, "ScheduleKeyDeletion 3 days", err, http.StatusBadRequest, "invalid_request")
	s := must[*client.Key](t, "ScheduleKeyDeletion")(c.ScheduleKeyDeletion(ctx, "alias/payments", client.ScheduleDeletionRequest{PendingDays: 7}))
	if s.State != client.KeyPendingDeletion || s.DeletionDate == nil {
		t.Fatalf("ScheduleKeyDeletion = %+v", s)
	}
	if d := time.Until(*s.DeletionDate); d < 6*24*time.Hour || d > 8*24*time.Hour {
		t.Errorf("deletion in %v, want about 7 days", d)
	}
	_, err = c.Encrypt(ctx, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")})
	wantAPIError(t, "Encrypt pending deletion", err, http.StatusConflict, "key_pending_deletion")
	_, err = c.EnableKey(ctx, k.ID)
	wantAPIError(t, "EnableKey pending deletion", err, http.StatusConflict, "invalid_key_state")
	cd := must[*client.Key](t, "CancelKeyDeletion")(c.CancelKeyDeletion(ctx, k.ID))
	if cd.State != client.KeyDisabled || cd.DeletionDate != nil {
		t.Fatalf("CancelKeyDeletion = %+v", cd)
	}
	_, err = c.CancelKeyDeletion(ctx, k.ID)
	wantAPIError(t, "CancelKeyDeletion twice", err, http.StatusConflict, "invalid_key_state")
	d := must[*client.Key](t, "ScheduleKeyDeletion default")(c.ScheduleKeyDeletion(ctx, plain.ID, client.ScheduleDeletionRequest{}))
	if d.DeletionDate == nil || time.Until(*d.DeletionDate) < 29*24*time.Hour {
		t.Fatalf("default deletion date = %v, want about 30 days", d.DeletionDate)
	}

	// Aliases.
	a := must[*client.Alias](t, "CreateAlias")(c.CreateAlias(ctx, client.Alias{Name: "alias/cards", KeyID: k.ID}))
	if a.Name != "alias/cards" || a.KeyID != k.ID {
		t.Fatalf("CreateAlias = %+v", a)
	}
	must[*client.Alias](t, "CreateAlias by alias")(c.CreateAlias(ctx, client.Alias{Name: "alias/other", KeyID: "alias/payments"}))
	_, err = c.CreateAlias(ctx, client.Alias{Name: "alias/cards", KeyID: plain.ID})
	wantAPIError(t, "CreateAlias duplicate", err, http.StatusConflict, "alias_exists")
	_, err = c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/payments"})
	wantAPIError(t, "CreateKey duplicate alias", err, http.StatusConflict, "alias_exists")
	_, err = c.CreateAlias(ctx, client.Alias{Name: "no-prefix", KeyID: k.ID})
	wantAPIError(t, "CreateAlias bad name", err, http.StatusBadRequest, "invalid_request")
	_, err = c.CreateAlias(ctx, client.Alias{Name: "alias/x", KeyID: "00000000-0000-0000-0000-000000000000"})
	wantAPIError(t, "CreateAlias unknown key", err, http.StatusNotFound, "key_not_found")

	al := must[*client.AliasList](t, "ListAliases")(c.ListAliases(ctx, ""))
	names := make([]string, 0, len(al.Aliases))
	for _, a := range al.Aliases {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, []string{"alias/cards", "alias/other", "alias/payments"}) {
		t.Fatalf("ListAliases = %v", names)
	}
	if al := must[*client.AliasList](t, "ListAliases by key")(c.ListAliases(ctx, plain.ID)); len(al.Aliases) != 0 {
		t.Fatalf("ListAliases(%s) = %+v", plain.ID, al.Aliases)
	}
	if err := c.DeleteAlias(ctx, "alias/other"); err != nil {
		t.Fatalf("DeleteAlias: %v", err)
	}
	wantAPIError(t, "DeleteAlias twice", c.DeleteAlias(ctx, "alias/other"), http.StatusNotFound, "alias_not_found")
	if d := must[*client.Key](t, "DescribeKey")(c.DescribeKey(ctx, k.ID)); !slices.Equal(d.Aliases, []string{"alias/cards", "alias/payments"}) {
		t.Fatalf("aliases after delete = %v", d.Aliases)
	}

	// Not found.
	_, err = c.DescribeKey(ctx, "alias/nope")
	wantAPIError(t, "DescribeKey unknown alias", err, http.StatusNotFound, "key_not_found")
	_, err = c.DescribeKey(ctx, "00000000-0000-0000-0000-000000000000")
	wantAPIError(t, "DescribeKey unknown id", err, http.StatusNotFound, "key_not_found")
	_, err = c.DisableKey(ctx, "nope")
	wantAPIError(t, "DisableKey unknown", err, http.StatusNotFound, "key_not_found")
}

// TestIntegrationKMS covers the cryptographic methods and their errors.
func TestIntegrationKMS(t *testing.T) {
	t.Parallel()
	c, _ := startDev(t, false)
	ctx := testContext(t)
	app := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/app"}))
	other := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/other"}))
	acme := map[string]string{"tenant": "acme"}

	enc := must[*client.EncryptResponse](t, "Encrypt")(c.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("hunter2"), Context: acme}))
	if enc.KeyID != app.ID || enc.KeyVersion != 1 || len(enc.Ciphertext) == 0 || bytes.Contains(enc.Ciphertext, []byte("hunter2")) {
		t.Fatalf("Encrypt = %+v", enc)
	}
	dec := must[*client.DecryptResponse](t, "Decrypt")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext, Context: acme}))
	if string(dec.Plaintext) != "hunter2" || dec.KeyID != app.ID || dec.KeyVersion != 1 {
		t.Fatalf("Decrypt = %+v", dec)
	}
	must[*client.DecryptResponse](t, "Decrypt with key_id")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext, Context: acme, KeyID: "alias/app"}))

	// Empty plaintext round-trips too.
	empty := must[*client.EncryptResponse](t, "Encrypt empty")(c.Encrypt(ctx, client.EncryptRequest{KeyID: app.ID, Plaintext: []byte{}}))
	if d := must[*client.DecryptResponse](t, "Decrypt empty")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: empty.Ciphertext})); len(d.Plaintext) != 0 {
		t.Fatalf("Decrypt empty = %q", d.Plaintext)
	}

	// Errors of decrypt.
	_, err := c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext, Context: map[string]string{"tenant": "evil"}})
	wantAPIError(t, "Decrypt wrong context", err, http.StatusBadRequest, "invalid_ciphertext")
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext})
	wantAPIError(t, "Decrypt missing context", err, http.StatusBadRequest, "invalid_ciphertext")
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext, Context: acme, KeyID: other.ID})
	wantAPIError(t, "Decrypt under another key_id", err, http.StatusBadRequest, "invalid_ciphertext")
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext[:20], Context: acme})
	wantAPIError(t, "Decrypt truncated", err, http.StatusBadRequest, "invalid_ciphertext")
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: []byte("hello world, not a ciphertext")})
	wantAPIError(t, "Decrypt garbage", err, http.StatusBadRequest, "invalid_ciphertext")
	altered := bytes.Clone(enc.Ciphertext)
	altered[len(altered)-1] ^= 1
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: altered, Context: acme})
	wantAPIError(t, "Decrypt altered", err, http.StatusBadRequest, "invalid_ciphertext")
	_, err = c.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/nope", Plaintext: []byte("x")})
	wantAPIError(t, "Encrypt unknown key", err, http.StatusNotFound, "key_not_found")
	_, err = c.Encrypt(ctx, client.EncryptRequest{KeyID: app.ID, Plaintext: make([]byte, 64<<10+1)})
	if e := wantAPIError(t, "Encrypt 64 KiB + 1", err, http.StatusBadRequest, "plaintext_too_large"); !strings.Contains(e.Message, "envelope encryption") {
		t.Errorf("too large message %q does not mention envelope encryption", e.Message)
	}
	must[*client.EncryptResponse](t, "Encrypt 64 KiB")(c.Encrypt(ctx, client.EncryptRequest{KeyID: app.ID, Plaintext: make([]byte, 64<<10)}))

	// ReEncrypt to another key, with a new context.
	re := must[*client.ReEncryptResponse](t, "ReEncrypt to other")(c.ReEncrypt(ctx, client.ReEncryptRequest{
		Ciphertext: enc.Ciphertext, SourceContext: acme, DestinationKeyID: "alias/other", DestinationContext: map[string]string{"tenant": "globex"},
	}))
	if re.SourceKeyID != app.ID || re.SourceKeyVersion != 1 || re.KeyID != other.ID || re.KeyVersion != 1 {
		t.Fatalf("ReEncrypt = %+v", re)
	}
	dec = must[*client.DecryptResponse](t, "Decrypt reencrypted")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: re.Ciphertext, Context: map[string]string{"tenant": "globex"}}))
	if string(dec.Plaintext) != "hunter2" || dec.KeyID != other.ID {
		t.Fatalf("Decrypt reencrypted = %+v", dec)
	}
	_, err = c.ReEncrypt(ctx, client.ReEncryptRequest{Ciphertext: enc.Ciphertext, DestinationKeyID: other.ID})
	wantAPIError(t, "ReEncrypt without the source context", err, http.StatusBadRequest, "invalid_ciphertext")
	_, err = c.ReEncrypt(ctx, client.ReEncryptRequest{Ciphertext: enc.Ciphertext, SourceContext: acme, DestinationKeyID: "alias/nope"})
	wantAPIError(t, "ReEncrypt to an unknown key", err, http.StatusNotFound, "key_not_found")

	// After a rotation, ReEncrypt without a destination moves to the
	// primary version, keeping the context; the old ciphertext still
	// decrypts.
	must[*client.Key](t, "RotateKey")(c.RotateKey(ctx, app.ID))
	re = must[*client.ReEncryptResponse](t, "ReEncrypt to current")(c.ReEncrypt(ctx, client.ReEncryptRequest{Ciphertext: enc.Ciphertext, SourceContext: acme}))
	if re.SourceKeyVersion != 1 || re.KeyID != app.ID || re.KeyVersion != 2 {
		t.Fatalf("ReEncrypt after rotation = %+v", re)
	}
	if d := must[*client.DecryptResponse](t, "Decrypt v2")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: re.Ciphertext, Context: acme})); string(d.Plaintext) != "hunter2" || d.KeyVersion != 2 {
		t.Fatalf("Decrypt v2 = %+v", d)
	}
	if d := must[*client.DecryptResponse](t, "Decrypt v1")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext, Context: acme})); string(d.Plaintext) != "hunter2" || d.KeyVersion != 1 {
		t.Fatalf("Decrypt v1 after rotation = %+v", d)
	}
	if e := must[*client.EncryptResponse](t, "Encrypt after rotation")(c.Encrypt(ctx, client.EncryptRequest{KeyID: app.ID, Plaintext: []byte("x")})); e.KeyVersion != 2 {
		t.Fatalf("Encrypt after rotation used version %d", e.KeyVersion)
	}

	// Data keys.
	disk := map[string]string{"purpose": "disk"}
	dk := must[*client.DataKeyResponse](t, "GenerateDataKey")(c.GenerateDataKey(ctx, client.DataKeyRequest{KeyID: "alias/app", Bytes: 16, Context: disk}))
	if len(dk.Plaintext) != 16 || dk.KeyID != app.ID || dk.KeyVersion != 2 {
		t.Fatalf("GenerateDataKey = %+v", dk)
	}
	dec = must[*client.DecryptResponse](t, "Decrypt data key")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: dk.Ciphertext, Context: disk}))
	if !bytes.Equal(dec.Plaintext, dk.Plaintext) {
		t.Fatal("the data key does not decrypt to its plaintext")
	}
	if dk := must[*client.DataKeyResponse](t, "GenerateDataKey default")(c.GenerateDataKey(ctx, client.DataKeyRequest{KeyID: app.ID})); len(dk.Plaintext) != 32 {
		t.Fatalf("default data key is %d bytes, want 32", len(dk.Plaintext))
	}
	np := must[*client.DataKeyResponse](t, "GenerateDataKeyWithoutPlaintext")(c.GenerateDataKeyWithoutPlaintext(ctx, client.DataKeyRequest{KeyID: app.ID, Bytes: 24}))
	if np.Plaintext != nil || len(np.Ciphertext) == 0 || np.KeyID != app.ID {
		t.Fatalf("GenerateDataKeyWithoutPlaintext = %+v", np)
	}
	if d := must[*client.DecryptResponse](t, "Decrypt data key")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: np.Ciphertext})); len(d.Plaintext) != 24 {
		t.Fatalf("data key without plaintext decrypts to %d bytes, want 24", len(d.Plaintext))
	}
	_, err = c.GenerateDataKey(ctx, client.DataKeyRequest{KeyID: app.ID, Bytes: 2000})
	wantAPIError(t, "GenerateDataKey 2000 bytes", err, http.StatusBadRequest, "invalid_request")
	_, err = c.GenerateDataKeyWithoutPlaintext(ctx, client.DataKeyRequest{KeyID: "alias/nope"})
	wantAPIError(t, "GenerateDataKeyWithoutPlaintext unknown key", err, http.StatusNotFound, "key_not_found")

	// Random bytes.
	r1 := must[*client.RandomResponse](t, "GenerateRandom")(c.GenerateRandom(ctx, client.RandomRequest{Bytes: 16}))
	r2 := must[*client.RandomResponse](t, "GenerateRandom")(c.GenerateRandom(ctx, client.RandomRequest{Bytes: 16}))
	if len(r1.Random) != 16 || bytes.Equal(r1.Random, r2.Random) {
		t.Fatalf("GenerateRandom = %x, %x", r1.Random, r2.Random)
	}
	_, err = c.GenerateRandom(ctx, client.RandomRequest{Bytes: 0})
	wantAPIError(t, "GenerateRandom 0", err, http.StatusBadRequest, "invalid_request")
	_, err = c.GenerateRandom(ctx, client.RandomRequest{Bytes: 1025})
	wantAPIError(t, "GenerateRandom 1025", err, http.StatusBadRequest, "invalid_request")
}

// TestIntegrationBatch checks that batch answers keep the order of the items
// and carry per-item errors without failing the others.
func TestIntegrationBatch(t *testing.T) {
	t.Parallel()
	c, _ := startDev(t, false)
	ctx := testContext(t)
	app := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/app"}))
	other := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{}))
	disabled := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{}))
	must[*client.Key](t, "DisableKey")(c.DisableKey(ctx, disabled.ID))

	items := []client.EncryptRequest{
		{Plaintext: []byte("zero"), Context: map[string]string{"i": "0"}}, // default key
		{Plaintext: []byte("one"), KeyID: other.ID},
		{Plaintext: []byte("two"), KeyID: "alias/nope"},  // bad: unknown key
		{Plaintext: []byte("three"), KeyID: disabled.ID}, // bad: disabled
		{Plaintext: []byte("four")},
	}
	be := must[*client.BatchEncryptResponse](t, "EncryptBatch")(c.EncryptBatch(ctx, client.BatchEncryptRequest{KeyID: "alias/app", Items: items}))
	if len(be.Results) != len(items) {
		t.Fatalf("EncryptBatch gave %d results for %d items", len(be.Results), len(items))
	}
	wantKeys := []string{app.ID, other.ID, "", "", app.ID}
	for i, r := range be.Results {
		switch i {
		case 2:
			if r.Error == nil || r.Error.Code != "key_not_found" || r.Ciphertext != nil {
				t.Errorf("item %d: %+v, want error key_not_found", i, r)
			}
		case 3:
			if r.Error == nil || r.Error.Code != "key_disabled" || r.Ciphertext != nil {
				t.Errorf("item %d: %+v, want error key_disabled", i, r)
			}
		default:
			if r.Error != nil || len(r.Ciphertext) == 0 || r.KeyID != wantKeys[i] {
				t.Errorf("item %d: %+v (error %+v), want a ciphertext under %s", i, r.EncryptResponse, r.Error, wantKeys[i])
			}
		}
	}

	// Decrypt the good ones back, with garbage and a wrong context in the
	// middle.
	dreq := []client.DecryptRequest{
		{Ciphertext: be.Results[0].Ciphertext, Context: map[string]string{"i": "0"}},
		{Ciphertext: []byte("garbage")},
		{Ciphertext: be.Results[1].Ciphertext},
		{Ciphertext: be.Results[0].Ciphertext}, // context missing
		{Ciphertext: be.Results[4].Ciphertext, KeyID: "alias/app"},
	}
	bd := must[*client.BatchDecryptResponse](t, "DecryptBatch")(c.DecryptBatch(ctx, client.BatchDecryptRequest{Items: dreq}))
	if len(bd.Results) != len(dreq) {
		t.Fatalf("DecryptBatch gave %d results for %d items", len(bd.Results), len(dreq))
	}
	wantPlain := []string{"zero", "", "one", "", "four"}
	for i, r := range bd.Results {
		if wantPlain[i] == "" {
			if r.Error == nil || r.Error.Code != "invalid_ciphertext" || r.Plaintext != nil {
				t.Errorf("item %d: %+v, want error invalid_ciphertext", i, r)
			}
			continue
		}
		if r.Error != nil || string(r.Plaintext) != wantPlain[i] {
			t.Errorf("item %d: plaintext %q, error %+v; want %q", i, r.Plaintext, r.Error, wantPlain[i])
		}
	}

	// An empty batch is a request error, not an empty answer.
	_, err := c.EncryptBatch(ctx, client.BatchEncryptRequest{KeyID: app.ID})
	wantAPIError(t, "EncryptBatch without items", err, http.StatusBadRequest, "invalid_request")
	_, err = c.DecryptBatch(ctx, client.BatchDecryptRequest{})
	wantAPIError(t, "DecryptBatch without items", err, http.StatusBadRequest, "invalid_request")
}

// TestIntegrationTokens covers token creation, lookup and revocation, and
// the 401 and 403 answers.
func TestIntegrationTokens(t *testing.T) {
	t.Parallel()
	root, ban := startDev(t, false)
	ctx := testContext(t)
	key := must[*client.Key](t, "CreateKey")(root.CreateKey(ctx, client.CreateKeyRequest{}))

	ti := must[*client.TokenInfo](t, "LookupSelf root")(root.LookupSelf(ctx))
	if !ti.Root || !strings.HasPrefix(ti.Accessor, "acc_") {
		t.Fatalf("root LookupSelf = %+v", ti)
	}

	must[*client.Policy](t, "PutPolicy")(root.PutPolicy(ctx, "keys-user", client.PutPolicyRequest{Document: keysUserPolicy}))
	tok := must[*client.CreateTokenResponse](t, "CreateToken")(root.CreateToken(ctx, client.CreateTokenRequest{TTL: "1h", DisplayName: "ci", Policies: []string{"keys-user"}}))
	if !strings.HasPrefix(tok.Token, "cft_") || tok.Root || tok.DisplayName != "ci" || tok.ExpiresAt == nil {
		t.Fatalf("CreateToken = %+v", tok)
	}
	if d := tok.ExpiresAt.Sub(tok.CreatedAt); d != time.Hour {
		t.Errorf("token lifetime = %v, want 1h", d)
	}
	_, err := root.CreateToken(ctx, client.CreateTokenRequest{TTL: "1000h"})
	wantAPIError(t, "CreateToken 1000h", err, http.StatusBadRequest, "invalid_request")

	c := must[*client.Client](t, "New")(client.New(ban.Addr, client.WithToken(tok.Token)))
	self := must[*client.TokenInfo](t, "LookupSelf")(c.LookupSelf(ctx))
	if self.Accessor != tok.Accessor || self.Root || self.DisplayName != "ci" {
		t.Fatalf("LookupSelf = %+v", self)
	}
	enc := must[*client.EncryptResponse](t, "Encrypt with a child token")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")}))
	must[*client.KeyList](t, "ListKeys with a child token")(c.ListKeys(ctx))

	// A non-root token may not administer tokens.
	_, err = c.CreateToken(ctx, client.CreateTokenRequest{})
	wantAPIError(t, "CreateToken with a child token", err, http.StatusForbidden, "permission_denied")
	wantAPIError(t, "RevokeToken with a child token", c.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: ti.Accessor}), http.StatusForbidden, "permission_denied")

	// Revocation by accessor takes effect at once.
	if err := root.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	_, err = c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext})
	wantAPIError(t, "Decrypt with a revoked token", err, http.StatusUnauthorized, "unauthenticated")
	wantAPIError(t, "RevokeToken twice", root.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: tok.Accessor}), http.StatusNotFound, "token_not_found")
	wantAPIError(t, "RevokeToken bad accessor", root.RevokeToken(ctx, client.RevokeTokenRequest{Accessor: "nope"}), http.StatusBadRequest, "invalid_request")
	if err := root.RevokeToken(ctx, client.RevokeTokenRequest{}); err == nil || errors.As(err, new(*client.APIError)) {
		t.Errorf("RevokeToken with neither token nor accessor: %v, want a client-side error", err)
	}

	// Revocation by the token itself, and RevokeSelf.
	t2 := must[*client.CreateTokenResponse](t, "CreateToken")(root.CreateToken(ctx, client.CreateTokenRequest{TTL: "10m"}))
	if err := root.RevokeToken(ctx, client.RevokeTokenRequest{Token: t2.Token}); err != nil {
		t.Fatalf("RevokeToken by token: %v", err)
	}
	c.SetToken(t2.Token)
	_, err = c.LookupSelf(ctx)
	wantAPIError(t, "LookupSelf revoked by token", err, http.StatusUnauthorized, "unauthenticated")
	t3 := must[*client.CreateTokenResponse](t, "CreateToken")(root.CreateToken(ctx, client.CreateTokenRequest{}))
	if d := t3.ExpiresAt.Sub(t3.CreatedAt); d != 24*time.Hour {
		t.Errorf("default token lifetime = %v, want 24h", d)
	}
	c.SetToken(t3.Token)
	if c.Token() != t3.Token {
		t.Fatal("SetToken did not take")
	}
	if err := c.RevokeSelf(ctx); err != nil {
		t.Fatalf("RevokeSelf: %v", err)
	}
	_, err = c.ListKeys(ctx)
	wantAPIError(t, "ListKeys after RevokeSelf", err, http.StatusUnauthorized, "unauthenticated")

	// No token, or an unknown one.
	anon := must[*client.Client](t, "New")(client.New(ban.Addr))
	_, err = anon.ListKeys(ctx)
	wantAPIError(t, "ListKeys without a token", err, http.StatusUnauthorized, "unauthenticated")
	anon.SetToken("cft_bogus")
	_, err = anon.GenerateRandom(ctx, client.RandomRequest{Bytes: 1})
	wantAPIError(t, "GenerateRandom with a bogus token", err, http.StatusUnauthorized, "unauthenticated")
	// Public routes need none.
	if _, err := anon.SealStatus(ctx); err != nil {
		t.Fatalf("SealStatus without a token: %v", err)
	}
}

// TestIntegrationTLS runs against a TLS server with a self-signed
// certificate: trusted through WithCACertFile (and COFFER_CACERT), refused
// without it.
func TestIntegrationTLS(t *testing.T) {
	c, ban := startDev(t, true)
	ctx := testContext(t)
	if !strings.HasPrefix(ban.Addr, "https://127.0.0.1:") {
		t.Fatalf("TLS server address %s", ban.Addr)
	}

	st := must[*client.SealStatus](t, "SealStatus")(c.SealStatus(ctx))
	if st.Sealed || !st.Initialized {
		t.Fatalf("dev server status = %+v", st)
	}
	key := must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/tls"}))
	enc := must[*client.EncryptResponse](t, "Encrypt")(c.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/tls", Plaintext: []byte("over TLS")}))
	dec := must[*client.DecryptResponse](t, "Decrypt")(c.Decrypt(ctx, client.DecryptRequest{Ciphertext: enc.Ciphertext}))
	if string(dec.Plaintext) != "over TLS" || dec.KeyID != key.ID {
		t.Fatalf("Decrypt = %+v", dec)
	}
	be := must[*client.BatchEncryptResponse](t, "EncryptBatch")(c.EncryptBatch(ctx, client.BatchEncryptRequest{KeyID: key.ID, Items: []client.EncryptRequest{{Plaintext: []byte("a")}, {Plaintext: []byte("b")}}}))
	if len(be.Results) != 2 || be.Results[0].Error != nil || be.Results[1].Error != nil {
		t.Fatalf("EncryptBatch over TLS = %+v", be.Results)
	}
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	if ready, err := c.Ready(ctx); err != nil || !ready {
		t.Fatalf("Ready = %v, %v", ready, err)
	}
	// localhost is in the certificate too.
	_, port, _ := strings.Cut(strings.TrimPrefix(ban.Addr, "https://"), ":")
	lc := must[*client.Client](t, "New localhost")(client.New("https://localhost:"+port, client.WithToken(ban.RootToken), client.WithCACertFile(ban.CACertFile)))
	if _, err := lc.DescribeKey(ctx, "alias/tls"); err != nil {
		t.Fatalf("via localhost: %v", err)
	}

	// Without the CA the certificate is not trusted.
	untrusted := must[*client.Client](t, "New")(client.New(ban.Addr, client.WithToken(ban.RootToken)))
	_, err := untrusted.SealStatus(ctx)
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("without the CA: err = %v (%T), want a certificate verification error", err, err)
	}
	if _, err := untrusted.Ready(ctx); err == nil {
		t.Fatal("Ready without the CA: no error")
	}
	skip := must[*client.Client](t, "New")(client.New(ban.Addr, client.WithToken(ban.RootToken), client.WithInsecureSkipVerify(true)))
	if _, err := skip.DescribeKey(ctx, key.ID); err != nil {
		t.Fatalf("skip verify: %v", err)
	}
	// Plain HTTP to the TLS port is answered with a 400 that is not a
	// Coffer error.
	plain := must[*client.Client](t, "New")(client.New("http://"+strings.TrimPrefix(ban.Addr, "https://"), client.WithToken(ban.RootToken)))
	_, err = plain.SealStatus(ctx)
	if e := wantPlainAPIError(t, err); e.StatusCode != http.StatusBadRequest {
		t.Fatalf("HTTP to HTTPS: %v", err)
	}

	// FromEnv reads the address, token and CA from the environment.
	t.Setenv(client.EnvAddress, ban.Addr)
	t.Setenv(client.EnvToken, ban.RootToken)
	t.Setenv(client.EnvCACert, ban.CACertFile)
	t.Setenv(client.EnvSkipVerify, "")
	env := must[*client.Client](t, "FromEnv")(client.FromEnv())
	if ti := must[*client.TokenInfo](t, "LookupSelf via FromEnv")(env.LookupSelf(ctx)); !ti.Root {
		t.Fatalf("FromEnv token = %+v", ti)
	}
}

// wantPlainAPIError returns err as an *APIError without a Coffer code.
func wantPlainAPIError(t *testing.T, err error) *client.APIError {
	t.Helper()
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "" {
		t.Fatalf("err = %v (%T), want an *APIError without a code", err, err)
	}
	return apiErr
}
