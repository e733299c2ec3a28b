package transit_test

// Tests against a real unsealing Coffer: internal/server.Run in dev mode,
// TLS with a certificate from a test CA (so a server restarted on the same
// port is trusted by a seal built before it started), on 127.0.0.1.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/seal/transit"
	"github.com/cofferkms/coffer/internal/server"
)

const testTimeout = 60 * time.Second

// unsealPolicy allows exactly what the seal needs: Encrypt and Decrypt on
// alias/unseal, with the seal's purpose in the context.
const unsealPolicy = `description: the transit seal of coffer-a
statements:
  - sid: UnsealRootKey
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: [alias/unseal]
    conditions:
      StringEquals:
        context.coffer-seal: root-key
`

// sealKeyPolicy is the key policy of alias/unseal in the operations guide.
const sealKeyPolicy = `statements:
  - sid: OnlyTheSealUsesTheKey
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: ["*"]
    principals: ["role:coffer-a-seal"]
    conditions:
      StringEquals:
        context.coffer-seal: root-key
  - sid: AdminsManageTheKey
    effect: allow
    actions: ["key:*"]
    resources: ["*"]
    principals: ["role:unseal-admin"]
`

// assumePolicy lets an access key assume the seal's roles, and nothing
// else.
const assumePolicy = `statements:
  - effect: allow
    actions: [auth:AssumeRole]
    resources: [role/coffer-a-seal, role/seal, role/other-role, role/bench-*]
`

// encryptOnlyPolicy lacks kms:Decrypt.
const encryptOnlyPolicy = `statements:
  - effect: allow
    actions: [kms:Encrypt]
    resources: [alias/unseal]
`

// broadPolicy lets a token use every key (to show that the seal's own
// binding to its key holds even then).
const broadPolicy = `statements:
  - effect: allow
    actions: ["kms:*"]
    resources: ["*"]
`

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate (common name coffer-a-seal) for certificate login.
type testPKI struct {
	caFile, certFile, keyFile string
	clientCert, clientKey     string
}

func newPKI(t testing.TB) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "transit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	cliKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cliTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "coffer-a-seal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cliDER, err := x509.CreateCertificate(rand.Reader, cliTmpl, ca, &cliKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cliKeyDER, err := x509.MarshalPKCS8PrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"),
		filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")}
	writeFile(t, p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	writeFile(t, p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644)
	writeFile(t, p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	writeFile(t, p.clientCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cliDER}), 0o644)
	writeFile(t, p.clientKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: cliKeyDER}), 0o600)
	return p
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile keeps an existing file's mode
		t.Fatal(err)
	}
}

// other is the unsealing Coffer.
type other struct {
	addr  string // https://127.0.0.1:PORT
	root  *client.Client
	share string // its one unseal share
	stop  func() // stops it and waits; idempotent
}

// startOther runs a dev server on listen (127.0.0.1:0 for a new port) with
// its store in dir (a restart on the same dir keeps keys and tokens).
func startOther(t testing.TB, pki testPKI, dir, listen string) *other {
	t.Helper()
	var cfg server.Config
	cfg.Dev, cfg.DevDir, cfg.Listen = true, dir, listen
	cfg.TLS.CertFile, cfg.TLS.KeyFile = pki.certFile, pki.keyFile
	cfg.TLS.ClientCAFile = pki.caFile // certificate login
	cfg.Audit.AlertsDisabled = true
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- server.Run(ctx, cfg, logger, func(b server.Banner) { ready <- b }) }()
	var ban server.Banner
	select {
	case ban = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("the unsealing Coffer did not start: %v", err)
	case <-time.After(testTimeout):
		cancel()
		t.Fatal("the unsealing Coffer did not start in time")
	}
	var stopped atomic.Bool
	stop := func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the unsealing Coffer stopped with: %v", err)
		}
	}
	t.Cleanup(stop)
	root, err := client.New(ban.Addr, client.WithToken(ban.RootToken), client.WithCACertFile(pki.caFile))
	if err != nil {
		t.Fatal(err)
	}
	return &other{addr: ban.Addr, root: root, share: ban.UnsealShare, stop: stop}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func ok[T any](t testing.TB, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// setup creates alias/unseal and the policies on o.
func (o *other) setup(t testing.TB) *client.Key {
	t.Helper()
	ctx := testCtx(t)
	key := ok[*client.Key](t, "CreateKey")(o.root.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/unseal"}))
	for name, doc := range map[string]string{"unseal": unsealPolicy, "encrypt-only": encryptOnlyPolicy, "broad": broadPolicy, "assume-seal": assumePolicy} {
		ok[*client.Policy](t, "PutPolicy "+name)(o.root.PutPolicy(ctx, name, client.PutPolicyRequest{Document: doc}))
	}
	return key
}

// token makes a token carrying policies.
func (o *other) token(t testing.TB, policies ...string) string {
	t.Helper()
	resp := ok[*client.CreateTokenResponse](t, "CreateToken")(o.root.CreateToken(testCtx(t), client.CreateTokenRequest{Policies: policies, TTL: "1h"}))
	return resp.Token
}

// tokenFile writes tok to a new 0600 file.
func tokenFile(t testing.TB, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	writeFile(t, p, []byte(tok+"\n"), 0o600)
	return p
}

func newSeal(t testing.TB, cfg transit.Config) *transit.Seal {
	t.Helper()
	s, err := transit.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rootKey(t testing.TB) []byte {
	k := make([]byte, transit.RootKeySize)
	rand.Read(k)
	return k
}

// noSecret fails if err's text holds any of the secrets.
func noSecret(t *testing.T, what string, err error, secrets ...[]byte) {
	t.Helper()
	for _, s := range secrets {
		if len(s) > 0 && bytes.Contains([]byte(err.Error()), s) {
			t.Fatalf("%s: the error shows a secret: %v", what, err)
		}
	}
}

// roundTrip wraps a fresh root key and unwraps it.
func roundTrip(t *testing.T, s *transit.Seal) []byte {
	t.Helper()
	ctx := testCtx(t)
	key := rootKey(t)
	blob, err := s.Wrap(ctx, key)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if bytes.Contains(blob, key) {
		t.Fatal("the blob holds the root key in the clear")
	}
	got, err := s.Unwrap(ctx, blob)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, key) {
		t.Fatal("Unwrap returned another key")
	}
	return blob
}

func TestRoundTripTokenFile(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	tok := o.token(t, "unseal")
	cfg := transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, tok),
		EncryptionContext: map[string]string{"cluster": "coffer-a"}}
	s := newSeal(t, cfg)
	if s.Type() != "transit" {
		t.Fatalf("Type = %q", s.Type())
	}
	// unsealPolicy requires coffer-seal=root-key: the round trip proves the
	// seal sends it.
	blob := roundTrip(t, s)
	ctx := testCtx(t)
	if err := s.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	// The blob records the context: a seal configured with another
	// context still opens it.
	cfg2 := cfg
	cfg2.EncryptionContext = nil
	if _, err := newSeal(t, cfg2).Unwrap(ctx, blob); err != nil {
		t.Fatalf("Unwrap with the context from the blob: %v", err)
	}
	if _, err := s.Wrap(ctx, make([]byte, 16)); err == nil {
		t.Fatal("Wrap of a 16-byte key succeeded")
	}
	info := s.Info()
	if info["type"] != "transit" || info["key"] != "alias/unseal" || info["address"] != o.addr || info["credential"] != "token_file" ||
		info["context"] != "cluster=coffer-a,coffer-seal=root-key" {
		t.Fatalf("Info = %v", info)
	}
	for k, v := range info {
		if strings.Contains(v, tok) {
			t.Fatalf("Info[%s] shows the token", k)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unwrap(ctx, blob); err == nil {
		t.Fatal("Unwrap after Close succeeded")
	}
}

// TestHealthProbeIsNoBlob: Health's ciphertext, made under the seal's
// context, must not pass for a root key. The probe is not exported, so the
// test makes one the same way through the client.
func TestHealthProbeIsNoBlob(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "unseal"))})
	ctx := testCtx(t)
	// A 32-byte plaintext under the seal's context plus the probe pair.
	probeCtx := map[string]string{"coffer-seal": "root-key", "coffer-seal-probe": "health"}
	enc := ok[*client.EncryptResponse](t, "Encrypt")(o.root.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/unseal", Plaintext: rootKey(t), Context: probeCtx}))
	_, err := s.Unwrap(ctx, buildBlob("alias/unseal", probeCtx, enc.Ciphertext))
	if !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("Unwrap of a probe-context blob = %v, want ErrBlob", err)
	}
	// The same ciphertext under the seal context alone opens: the refusal
	// above is the probe pair's.
	sealCtx := map[string]string{"coffer-seal": "root-key"}
	enc = ok[*client.EncryptResponse](t, "Encrypt")(o.root.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/unseal", Plaintext: rootKey(t), Context: sealCtx}))
	if _, err := s.Unwrap(ctx, buildBlob("alias/unseal", sealCtx, enc.Ciphertext)); err != nil {
		t.Fatalf("Unwrap of a blob built per the documented format: %v", err)
	}
	// A ciphertext of a 16-byte plaintext is no root key.
	enc = ok[*client.EncryptResponse](t, "Encrypt")(o.root.Encrypt(ctx, client.EncryptRequest{KeyID: "alias/unseal", Plaintext: make([]byte, 16), Context: sealCtx}))
	if _, err := s.Unwrap(ctx, buildBlob("alias/unseal", sealCtx, enc.Ciphertext)); !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("Unwrap of a 16-byte plaintext blob = %v, want ErrBlob", err)
	}
}

func TestRoleAccessKey(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ctx := testCtx(t)
	ak := ok[*client.CreateAccessKeyResponse](t, "CreateAccessKey")(o.root.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Description: "coffer-a seal", Policies: []string{"assume-seal"}}))
	ok[*client.Role](t, "CreateRole")(o.root.CreateRole(ctx, client.Role{Name: "coffer-a-seal", Policies: []string{"unseal"},
		TrustPrincipals: []string{"access-key:" + ak.ID}, TTL: "15m"}))
	// The key policy of the operations guide: only the seal's role uses
	// the key, and only for the root key.
	ok[*client.KeyPolicy](t, "PutKeyPolicy")(o.root.PutKeyPolicy(ctx, "alias/unseal", sealKeyPolicy))
	for name, content := range map[string]string{
		"colon":     ak.ID + ":" + ak.SecretAccessKey + "\n",
		"two lines": ak.ID + "\n" + ak.SecretAccessKey + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "access-key")
			writeFile(t, f, []byte(content), 0o600)
			s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, Role: "coffer-a-seal", AccessKeyFile: f})
			roundTrip(t, s)
			if err := s.Health(testCtx(t)); err != nil {
				t.Fatalf("Health: %v", err)
			}
			if s.Info()["role"] != "coffer-a-seal" || s.Info()["credential"] != "access_key" {
				t.Fatalf("Info = %v", s.Info())
			}
		})
	}
	// A token whose identity policy allows every key is still refused
	// by the key policy.
	broad := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "broad"))})
	if _, err := broad.Wrap(ctx, rootKey(t)); !errors.Is(err, transit.ErrRefused) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Wrap by a token outside the key policy = %v", err)
	}
	// A file others can read is refused at New, without the secret in
	// the error.
	f := filepath.Join(t.TempDir(), "access-key")
	writeFile(t, f, []byte(ak.ID+":"+ak.SecretAccessKey), 0o644)
	_, err := transit.New(transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, Role: "coffer-a-seal", AccessKeyFile: f})
	if !errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("New with a 0644 access key file = %v", err)
	}
	noSecret(t, "New", err, []byte(ak.SecretAccessKey))
	// A role that does not trust the access key: a login error naming the
	// role, not a key permission.
	ok[*client.Role](t, "CreateRole")(o.root.CreateRole(ctx, client.Role{Name: "other-role", Policies: []string{"unseal"}, TrustPrincipals: []string{"role:nobody"}}))
	writeFile(t, f, []byte(ak.ID+":"+ak.SecretAccessKey), 0o600)
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, Role: "other-role", AccessKeyFile: f})
	_, err = s.Wrap(ctx, rootKey(t))
	if !errors.Is(err, transit.ErrRefused) || !strings.Contains(err.Error(), `role "other-role"`) {
		t.Fatalf("Wrap with an untrusted role = %v", err)
	}
	noSecret(t, "Wrap", err, []byte(ak.SecretAccessKey))
}

func TestRoleCertificate(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ok[*client.Role](t, "CreateRole")(o.root.CreateRole(testCtx(t), client.Role{Name: "coffer-a-seal", Policies: []string{"unseal"}, TTL: "15m",
		Certificates: []client.CertificateTrust{{CommonName: "coffer-a-seal"}}}))
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, Role: "coffer-a-seal",
		ClientCertFile: pki.clientCert, ClientKeyFile: pki.clientKey})
	roundTrip(t, s)
	if s.Info()["credential"] != "client_certificate" || s.Info()["client_cert_file"] != pki.clientCert {
		t.Fatalf("Info = %v", s.Info())
	}
}

func TestRoleKubernetes(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ctx := testCtx(t)
	const issuer = "https://kubernetes.test"
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &sk.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	ok[*client.Cluster](t, "RegisterCluster")(o.root.RegisterCluster(ctx, client.Cluster{Name: "prod", Mode: "jwks", Issuer: issuer, JWKS: string(jwks)}))
	ok[*client.Role](t, "CreateRole")(o.root.CreateRole(ctx, client.Role{Name: "coffer-a-seal", Policies: []string{"unseal"}, TTL: "15m",
		Kubernetes: []client.KubernetesTrust{{Cluster: "prod", Namespace: "coffer", ServiceAccount: "coffer"}}}))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: sk}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := jwt.Claims{Issuer: issuer, Subject: "system:serviceaccount:coffer:coffer", Audience: jwt.Audience{"coffer"},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
	priv := map[string]any{"kubernetes.io": map[string]any{"namespace": "coffer", "serviceaccount": map[string]string{"name": "coffer", "uid": "u-1"}}}
	sa, err := jwt.Signed(signer).Claims(claims).Claims(priv).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	saFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, saFile, []byte(sa), 0o600)
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, Role: "coffer-a-seal",
		KubernetesTokenFile: saFile, Cluster: "prod"})
	roundTrip(t, s)
	if s.Info()["credential"] != "kubernetes" || s.Info()["cluster"] != "prod" {
		t.Fatalf("Info = %v", s.Info())
	}
}

func TestPermissionDenied(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ctx := testCtx(t)
	good := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "unseal"))})
	blob := roundTrip(t, good)

	tok := o.token(t, "encrypt-only")
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, tok)})
	key := rootKey(t)
	// Wrap encrypts, then proves the blob decrypts: without kms:Decrypt it
	// must not hand back a blob that would lock the server out.
	out, wrapErr := s.Wrap(ctx, key)
	if wrapErr == nil || out != nil {
		t.Fatalf("Wrap without kms:Decrypt = %d bytes, %v", len(out), wrapErr)
	}
	_, unwrapErr := s.Unwrap(ctx, blob)
	for what, err := range map[string]error{"Wrap": wrapErr, "Unwrap": unwrapErr} {
		if !errors.Is(err, transit.ErrRefused) || errors.Is(err, seal.ErrMisconfigured) || errors.Is(err, seal.ErrBlob) {
			t.Fatalf("%s without kms:Decrypt = %v, want ErrRefused only", what, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "permission denied") || !strings.Contains(msg, "alias/unseal") || !strings.Contains(msg, "kms:Decrypt") {
			t.Fatalf("%s: the error does not say what is denied on which key: %v", what, err)
		}
		noSecret(t, what, err, []byte(tok), key)
	}
	if err := s.Health(ctx); !errors.Is(err, transit.ErrRefused) {
		t.Fatalf("Health without kms:Decrypt = %v", err)
	}
}

func TestKeyDisabledAndMissing(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	key := o.setup(t)
	ctx := testCtx(t)
	tf := tokenFile(t, o.token(t, "unseal"))
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tf})
	rk := rootKey(t)
	blob := ok[[]byte](t, "Wrap")(s.Wrap(ctx, rk))

	ok[*client.Key](t, "DisableKey")(o.root.DisableKey(ctx, key.ID))
	_, err := s.Unwrap(ctx, blob)
	if !errors.Is(err, transit.ErrRefused) || errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), "alias/unseal is disabled") {
		t.Fatalf("Unwrap with the key disabled = %v", err)
	}
	if err := s.Health(ctx); !errors.Is(err, transit.ErrRefused) {
		t.Fatalf("Health with the key disabled = %v", err)
	}
	ok[*client.Key](t, "EnableKey")(o.root.EnableKey(ctx, key.ID))
	got, err := s.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, rk) {
		t.Fatalf("Unwrap after enabling = %v", err)
	}

	// The unsealing Coffer sealed: transient, says so.
	if err := o.root.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = s.Unwrap(ctx, blob)
	if !errors.Is(err, transit.ErrUnavailable) || !strings.Contains(err.Error(), "sealed") {
		t.Fatalf("Unwrap with the unsealing Coffer sealed = %v", err)
	}
	ok[*client.SealStatus](t, "Unseal")(o.root.Unseal(ctx, client.UnsealRequest{Share: o.share}))
	if got, err := s.Unwrap(ctx, blob); err != nil || !bytes.Equal(got, rk) {
		t.Fatalf("Unwrap after the unsealing Coffer was unsealed = %v", err)
	}

	// A key rotation keeps old blobs working (the ciphertext names its
	// version).
	ok[*client.Key](t, "RotateKey")(o.root.RotateKey(ctx, key.ID))
	if got, err := s.Unwrap(ctx, blob); err != nil || !bytes.Equal(got, rk) {
		t.Fatalf("Unwrap after a rotation = %v", err)
	}

	// A key that does not exist there.
	missing := newSeal(t, transit.Config{Address: o.addr, Key: "alias/missing", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "broad"))})
	_, err = missing.Wrap(ctx, rootKey(t))
	if !errors.Is(err, transit.ErrRefused) || !strings.Contains(err.Error(), "alias/missing was not found") {
		t.Fatalf("Wrap with a missing key = %v", err)
	}
}

func TestWrongKeyAndTamperedBlob(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ctx := testCtx(t)
	ok[*client.Key](t, "CreateKey")(o.root.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/other"}))
	// One token that may use every key: the binding to the configured key
	// must come from the seal, not from the policy.
	tf := tokenFile(t, o.token(t, "broad"))
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tf})
	sOther := newSeal(t, transit.Config{Address: o.addr, Key: "alias/other", CACertFile: pki.caFile, TokenFile: tf})
	rk := rootKey(t)
	blob := ok[[]byte](t, "Wrap")(s.Wrap(ctx, rk))
	otherBlob := ok[[]byte](t, "Wrap")(sOther.Wrap(ctx, rk))

	wantBlobErr := func(what string, data []byte) {
		t.Helper()
		got, err := s.Unwrap(ctx, data)
		if !errors.Is(err, seal.ErrBlob) || got != nil {
			t.Fatalf("%s: Unwrap = %d bytes, %v; want ErrBlob", what, len(got), err)
		}
		noSecret(t, what, err, rk)
	}
	wantBlobErr("a blob of another key", otherBlob)
	// The same ciphertext, its blob claiming the configured key.
	ob := parseTestBlob(t, otherBlob)
	wantBlobErr("another key's ciphertext relabelled", buildBlob("alias/unseal", ob.ctx, ob.ct))

	b := parseTestBlob(t, blob)
	// Flips in the header (format, key version), the nonce and the sealed
	// data. A flip in the key id names a key the server does not have,
	// which it cannot tell from a deleted key (below).
	for _, i := range []int{0, 2, 22, 23, 30, 35, 60, len(b.ct) - 1} {
		ct := slices.Clone(b.ct)
		ct[i] ^= 0x01
		wantBlobErr("ciphertext byte flipped", buildBlob(b.ref, b.ctx, ct))
	}
	ct := slices.Clone(b.ct)
	ct[5] ^= 0x01
	if _, err := s.Unwrap(ctx, buildBlob(b.ref, b.ctx, ct)); !errors.Is(err, transit.ErrRefused) || !strings.Contains(err.Error(), "has no key with the id") {
		t.Fatalf("Unwrap with the key id altered = %v", err)
	}
	ctx2 := map[string]string{"coffer-seal": "root-key", "extra": "x"}
	wantBlobErr("context changed", buildBlob(b.ref, ctx2, b.ct))
	wantBlobErr("truncated", blob[:len(blob)-1])
	wantBlobErr("empty", nil)
	wantBlobErr("version 2", append([]byte{2}, blob[1:]...))
	if got, err := s.Unwrap(ctx, blob); err != nil || !bytes.Equal(got, rk) {
		t.Fatalf("the intact blob no longer opens: %v", err)
	}

	// With the tight policy, another key's ciphertext is forbidden rather
	// than inauthentic: the error names the key id the blob carries.
	tight := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "unseal"))})
	_, err := tight.Unwrap(ctx, buildBlob("alias/unseal", ob.ctx, ob.ct))
	if err == nil || !strings.Contains(err.Error(), "names key id") {
		t.Fatalf("Unwrap of another key's ciphertext with the tight policy = %v", err)
	}
}

func TestTokenFileReplaced(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ctx := testCtx(t)
	tokA, tokB := o.token(t, "unseal"), o.token(t, "unseal")
	tf := tokenFile(t, tokA)
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tf})
	rk := rootKey(t)
	blob := ok[[]byte](t, "Wrap")(s.Wrap(ctx, rk))

	// An agent replaces the token (write and rename, as agents do), and
	// the old one is revoked: the next call must carry the new one.
	tmp := tf + ".new"
	writeFile(t, tmp, []byte(tokB), 0o600)
	if err := os.Rename(tmp, tf); err != nil {
		t.Fatal(err)
	}
	if err := o.root.RevokeToken(ctx, client.RevokeTokenRequest{Token: tokA}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unwrap(ctx, blob); err != nil || !bytes.Equal(got, rk) {
		t.Fatalf("Unwrap with the replaced token = %v", err)
	}
	// Revoked in place: 401, naming the file, not the token.
	if err := o.root.RevokeToken(ctx, client.RevokeTokenRequest{Token: tokB}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Unwrap(ctx, blob)
	if !errors.Is(err, transit.ErrRefused) || !strings.Contains(err.Error(), tf) {
		t.Fatalf("Unwrap with a revoked token = %v", err)
	}
	noSecret(t, "revoked", err, []byte(tokB), rk)

	// A file others can read is refused before the token is sent.
	tokC := o.token(t, "unseal")
	writeFile(t, tf, []byte(tokC), 0o640)
	_, err = s.Unwrap(ctx, blob)
	if err == nil || !strings.Contains(err.Error(), "0640") {
		t.Fatalf("Unwrap with a 0640 token file = %v", err)
	}
	noSecret(t, "0640", err, []byte(tokC))
	// Something that is not a token is not sent either.
	writeFile(t, tf, []byte("hunter2-not-a-token"), 0o600)
	_, err = s.Unwrap(ctx, blob)
	if err == nil || !strings.Contains(err.Error(), "does not hold one Coffer token") {
		t.Fatalf("Unwrap with garbage in the token file = %v", err)
	}
	noSecret(t, "garbage", err, []byte("hunter2"))
	if err := os.Remove(tf); err != nil {
		t.Fatal(err)
	}
	if _, err = s.Unwrap(ctx, blob); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Unwrap without the token file = %v", err)
	}
	writeFile(t, tf, []byte(tokC), 0o600)
	if got, err := s.Unwrap(ctx, blob); err != nil || !bytes.Equal(got, rk) {
		t.Fatalf("Unwrap after the agent wrote a good token = %v", err)
	}
}

// TestDownAtStart: the unsealing Coffer is down when the seal is built and
// at the first Unwrap, then comes back on the same address.
func TestDownAtStart(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	dir := t.TempDir()
	o := startOther(t, pki, dir, "127.0.0.1:0")
	o.setup(t)
	ctx := testCtx(t)
	tok := o.token(t, "unseal")
	tf := tokenFile(t, tok)
	ak := ok[*client.CreateAccessKeyResponse](t, "CreateAccessKey")(o.root.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Policies: []string{"assume-seal"}}))
	ok[*client.Role](t, "CreateRole")(o.root.CreateRole(ctx, client.Role{Name: "seal", Policies: []string{"unseal"}, TrustPrincipals: []string{"access-key:" + ak.ID}}))
	akFile := filepath.Join(t.TempDir(), "ak")
	writeFile(t, akFile, []byte(ak.ID+":"+ak.SecretAccessKey), 0o600)
	cfgTok := transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tf}
	cfgRole := transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, Role: "seal", AccessKeyFile: akFile}
	rk := rootKey(t)
	blob := ok[[]byte](t, "Wrap")(newSeal(t, cfgTok).Wrap(ctx, rk))
	o.stop()

	listen := strings.TrimPrefix(o.addr, "https://")
	seals := map[string]*transit.Seal{"token_file": newSeal(t, cfgTok), "role": newSeal(t, cfgRole)}
	for name, s := range seals {
		_, err := s.Unwrap(ctx, blob)
		if !errors.Is(err, transit.ErrUnavailable) || !strings.Contains(err.Error(), "cannot reach the unsealing Coffer at "+o.addr) {
			t.Fatalf("%s: Unwrap with the unsealing Coffer down = %v", name, err)
		}
		if errors.Is(err, seal.ErrMisconfigured) || errors.Is(err, seal.ErrBlob) {
			t.Fatalf("%s: a transient failure is classed as permanent: %v", name, err)
		}
		noSecret(t, name, err, []byte(tok), []byte(ak.SecretAccessKey))
		if err := s.Health(ctx); !errors.Is(err, transit.ErrUnavailable) {
			t.Fatalf("%s: Health with the unsealing Coffer down = %v", name, err)
		}
	}

	startOther(t, pki, dir, listen)
	for name, s := range seals {
		got, err := s.Unwrap(ctx, blob)
		if err != nil || !bytes.Equal(got, rk) {
			t.Fatalf("%s: Unwrap after the unsealing Coffer came back = %v", name, err)
		}
	}
}

// TestUntrustedCertificate: a server whose certificate the CA file does
// not vouch for is not talked to, and the error says why.
func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	o := startOther(t, newPKI(t), t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	tok := o.token(t, "unseal")
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: newPKI(t).caFile, TokenFile: tokenFile(t, tok)})
	_, err := s.Wrap(testCtx(t), rootKey(t))
	if !errors.Is(err, transit.ErrUnavailable) || !strings.Contains(err.Error(), "TLS certificate is not trusted") {
		t.Fatalf("Wrap against an untrusted certificate = %v", err)
	}
	noSecret(t, "untrusted", err, []byte(tok))
}

// TestFailover: two addresses, the first down; the seal unwraps through
// the second.
func TestFailover(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	s := newSeal(t, transit.Config{Address: dead, Addresses: []string{o.addr}, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "unseal"))})
	roundTrip(t, s)
	if got := s.Info()["address"]; got != dead+","+o.addr {
		t.Fatalf("Info address = %q", got)
	}
}

// TestNoRedirect: a server that redirects must not lead the seal to send
// its token elsewhere.
func TestNoRedirect(t *testing.T) {
	t.Parallel()
	var leaked atomic.Bool
	sink := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	defer sink.Close()
	var sawToken atomic.Bool
	redir := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawToken.Store(strings.HasPrefix(r.Header.Get("Authorization"), "Bearer cft_"))
		http.Redirect(w, r, sink.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redir.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	var pemData []byte
	for _, srv := range []*httptest.Server{sink, redir} {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	}
	writeFile(t, ca, pemData, 0o644)
	s := newSeal(t, transit.Config{Address: redir.URL, Key: "alias/unseal", CACertFile: ca, TokenFile: tokenFile(t, validToken(t))})
	_, err := s.Wrap(testCtx(t), rootKey(t))
	if err == nil {
		t.Fatal("Wrap through a redirect succeeded")
	}
	if !sawToken.Load() {
		t.Fatal("the configured server did not receive the token (the test proves nothing)")
	}
	if leaked.Load() {
		t.Fatal("the token was sent to the redirect target")
	}
}

// validToken is a well-formed token no server knows.
func validToken(t testing.TB) string { return credential.New(credential.TokenPrefix) }

// testBlob is a blob's fields, read per the documented format.
type testBlob struct {
	ref string
	ctx map[string]string
	ct  []byte
}

// buildBlob writes a v1 blob per docs/formats.md, independently of the
// package's encoder.
func buildBlob(ref string, ctx map[string]string, ct []byte) []byte {
	out := []byte{1}
	out = binary.BigEndian.AppendUint16(out, uint16(len(ref)))
	out = append(out, ref...)
	names := make([]string, 0, len(ctx))
	for k := range ctx {
		names = append(names, k)
	}
	slices.Sort(names)
	out = append(out, byte(len(names)))
	for _, k := range names {
		out = binary.BigEndian.AppendUint16(out, uint16(len(k)))
		out = append(out, k...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(ctx[k])))
		out = append(out, ctx[k]...)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(ct)))
	return append(out, ct...)
}

func parseTestBlob(t *testing.T, b []byte) testBlob {
	t.Helper()
	var tb testBlob
	if len(b) < 3 || b[0] != 1 {
		t.Fatalf("blob does not start with version 1")
	}
	n := int(binary.BigEndian.Uint16(b[1:]))
	tb.ref, b = string(b[3:3+n]), b[3+n:]
	pairs := int(b[0])
	b = b[1:]
	tb.ctx = map[string]string{}
	for range pairs {
		kl := int(binary.BigEndian.Uint16(b))
		k := string(b[2 : 2+kl])
		b = b[2+kl:]
		vl := int(binary.BigEndian.Uint16(b))
		tb.ctx[k] = string(b[2 : 2+vl])
		b = b[2+vl:]
	}
	cl := int(binary.BigEndian.Uint16(b))
	tb.ct = b[2:]
	if len(tb.ct) != cl {
		t.Fatalf("blob: ciphertext length %d, %d bytes follow", cl, len(tb.ct))
	}
	return tb
}

// BenchmarkUnwrap is the unseal cost: one Decrypt on the unsealing Coffer
// over TLS (kept-alive connection), the token file read each time.
func BenchmarkUnwrap(b *testing.B) {
	pki := newPKI(b)
	o := startOther(b, pki, b.TempDir(), "127.0.0.1:0")
	o.setup(b)
	ctx := context.Background()
	for _, mode := range []string{"token_file", "role"} {
		b.Run(mode, func(b *testing.B) {
			cfg := transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile}
			if mode == "token_file" {
				cfg.TokenFile = tokenFile(b, o.token(b, "unseal"))
			} else {
				ak := ok[*client.CreateAccessKeyResponse](b, "CreateAccessKey")(o.root.CreateAccessKey(ctx, client.CreateAccessKeyRequest{Policies: []string{"assume-seal"}}))
				ok[*client.Role](b, "CreateRole")(o.root.CreateRole(ctx, client.Role{Name: "bench-" + ak.ID[5:13], Policies: []string{"unseal"}, TrustPrincipals: []string{"access-key:" + ak.ID}}))
				cfg.Role, cfg.AccessKeyFile = "bench-"+ak.ID[5:13], filepath.Join(b.TempDir(), "ak")
				writeFile(b, cfg.AccessKeyFile, []byte(ak.ID+":"+ak.SecretAccessKey), 0o600)
			}
			s := newSeal(b, cfg)
			blob, err := s.Wrap(ctx, rootKey(b))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				k, err := s.Unwrap(ctx, blob)
				if err != nil {
					b.Fatal(err)
				}
				clear(k)
			}
		})
	}
}

// TestConcurrent: Unwraps and Health from many goroutines while an agent
// swaps the token file between two valid tokens (run with -race).
func TestConcurrent(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	toks := []string{o.token(t, "unseal"), o.token(t, "unseal")}
	tf := tokenFile(t, toks[0])
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tf})
	ctx := testCtx(t)
	rk := rootKey(t)
	blob := ok[[]byte](t, "Wrap")(s.Wrap(ctx, rk))
	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tmp := tf + ".tmp"
			writeFile(t, tmp, []byte(toks[i%2]), 0o600)
			if err := os.Rename(tmp, tf); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for range 10 {
				if g == 0 {
					if err := s.Health(ctx); err != nil {
						errs <- err
						return
					}
					continue
				}
				got, err := s.Unwrap(ctx, blob)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, rk) {
					errs <- errors.New("Unwrap returned another key")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	<-swapped
}

// TestCanceled: a canceled context ends a call with the context's error,
// not a claim that the server is down.
func TestCanceled(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	o := startOther(t, pki, t.TempDir(), "127.0.0.1:0")
	o.setup(t)
	s := newSeal(t, transit.Config{Address: o.addr, Key: "alias/unseal", CACertFile: pki.caFile, TokenFile: tokenFile(t, o.token(t, "unseal"))})
	blob := roundTrip(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Unwrap(ctx, blob)
	if !errors.Is(err, context.Canceled) || errors.Is(err, transit.ErrUnavailable) {
		t.Fatalf("Unwrap with a canceled context = %v", err)
	}
}
