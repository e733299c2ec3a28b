package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// issue makes a certificate for cn signed by ca (self-signed when ca is
// nil).
func issueCert(t *testing.T, cn string, ca *tls.Certificate, isCA bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestCertLogin: over real TLS on loopback, a client certificate verified
// against the client CA logs in to a role that trusts its common name; a
// certificate of another name, one from another CA, and none are refused.
func TestCertLogin(t *testing.T) {
	s := sys.New(barrier.New(inmem.New()), nil)
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ca := issueCert(t, "coffer client CA", nil, true)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	ts := httptest.NewUnstartedServer(api)
	ts.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	serverCA := x509.NewCertPool()
	serverCA.AddCert(ts.Certificate())

	newClient := func(cert *tls.Certificate) *client.Client {
		cfg := &tls.Config{RootCAs: serverCA}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c, err := client.New(ts.URL, client.WithTLSConfig(cfg))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := t.Context()
	anon := newClient(nil)
	ir, err := anon.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Unseal(ctx, client.UnsealRequest{Share: ir.Shares[0]}); err != nil {
		t.Fatal(err)
	}
	anon.SetToken(ir.RootToken)
	if _, err := anon.PutPolicy(ctx, "plugin", client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Encrypt, kms:Decrypt]\n    resources: [\"*\"]\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.CreateRole(ctx, client.Role{Name: "kms-plugin", Policies: []string{"plugin"}, TTL: "10m",
		Certificates: []client.CertificateTrust{{CommonName: "kms-plugin-*"}}}); err != nil {
		t.Fatal(err)
	}
	key, err := anon.CreateKey(ctx, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}

	good := issueCert(t, "kms-plugin-node1", &ca, false)
	c := newClient(&good)
	tok, err := c.CertLogin(ctx, client.CertLoginRequest{Role: "kms-plugin"})
	if err != nil || tok.Role != "kms-plugin" || tok.Subject != "cert:kms-plugin-node1" {
		t.Fatalf("cert login: %+v %v", tok, err)
	}
	c.SetToken(tok.Token)
	if _, err := c.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("encrypt as the role: %v", err)
	}
	// WithRole + a client certificate logs in by itself.
	auto, err := client.New(ts.URL, client.WithTLSConfig(&tls.Config{RootCAs: serverCA, Certificates: []tls.Certificate{good}}), client.WithRole("kms-plugin"))
	if err == nil {
		_, err = auto.Encrypt(ctx, client.EncryptRequest{KeyID: key.ID, Plaintext: []byte("x")})
	}
	if err != nil {
		t.Fatalf("WithRole with a client certificate: %v", err)
	}

	for name, cert := range map[string]*tls.Certificate{
		"other name": ptr(issueCert(t, "web-frontend", &ca, false)),
		"no cert":    nil,
	} {
		_, err := newClient(cert).CertLogin(ctx, client.CertLoginRequest{Role: "kms-plugin"})
		wantStatus(t, name, err, map[string]int{"other name": http.StatusForbidden, "no cert": http.StatusUnauthorized}[name])
	}
	// A role that does not exist answers as one that does not trust the
	// certificate: logins cannot list the roles.
	other := newClient(ptr(issueCert(t, "web-frontend", &ca, false)))
	_, errMissing := other.CertLogin(ctx, client.CertLoginRequest{Role: "nope"})
	_, errUntrusted := other.CertLogin(ctx, client.CertLoginRequest{Role: "kms-plugin"})
	answer := func(err error, role string) string {
		msg, _, _ := strings.Cut(err.Error(), " (request id")
		return strings.ReplaceAll(msg, `"`+role+`"`, `"R"`)
	}
	if errMissing == nil || errUntrusted == nil || answer(errMissing, "nope") != answer(errUntrusted, "kms-plugin") {
		t.Errorf("cert login to a missing role: %v; to a role not trusting the certificate: %v", errMissing, errUntrusted)
	}
	// A certificate from another CA fails the handshake itself.
	foreign := issueCert(t, "kms-plugin-evil", ptr(issueCert(t, "other CA", nil, true)), false)
	if _, err := newClient(&foreign).CertLogin(ctx, client.CertLoginRequest{Role: "kms-plugin"}); err == nil {
		t.Fatal("a certificate of a foreign CA logged in")
	}
}

func ptr[T any](v T) *T { return &v }

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	ae, ok := err.(*client.APIError)
	if !ok || ae.StatusCode != status {
		t.Errorf("%s: %v, want status %d", what, err, status)
	}
}
