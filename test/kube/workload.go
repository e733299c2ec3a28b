package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Helpers for workload-identity tests: service accounts, their tokens from
// the TokenRequest API, and the CA a verifier of this apiserver trusts.

// CACertPEM returns the CA certificate of the apiserver's self-signed
// serving chain, in PEM. The TLS handshake presents the chain (serving
// certificate, then its CA); the CA is taken from there once, on
// loopback, so everything after can verify the apiserver, host name
// included.
func (a *APIServer) CACertPEM() []byte {
	a.t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(a.URL, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		a.t.Fatal(err)
	}
	defer conn.Close()
	for _, c := range conn.ConnectionState().PeerCertificates {
		if c.IsCA {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	a.t.Fatal("the apiserver's TLS chain has no CA certificate")
	return nil
}

// CreateServiceAccount creates the service account ns/name, and the
// namespace first when it does not exist.
func (a *APIServer) CreateServiceAccount(t testing.TB, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := a.Clientset()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating service account %s/%s: %v", ns, name, err)
	}
	return sa
}

// DeleteServiceAccount deletes the service account ns/name.
func (a *APIServer) DeleteServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Clientset().CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting service account %s/%s: %v", ns, name, err)
	}
}

// ServiceAccountToken mints a token for ns/name with the TokenRequest API,
// for audience and valid for seconds (600 at least), as the kubelet does
// for a projected volume.
func (a *APIServer) ServiceAccountToken(t testing.TB, ns, name, audience string, seconds int64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := a.Clientset().CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s (audience %s): %v", ns, name, audience, err)
	}
	return tr.Status.Token
}

// ReissueToken re-signs a service-account token of this apiserver with the
// apiserver's own signing key after edit has changed its claims: a token
// the real apiserver would have issued at another time (TokenRequest
// cannot issue one that has already expired). The header keeps its kid.
func (a *APIServer) ReissueToken(t testing.TB, token string, edit func(claims map[string]any)) string {
	t.Helper()
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parsing a service-account token: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(jws.UnsafePayloadWithoutVerification()))
	dec.UseNumber() // the claims go back as they came
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(a.dir, "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatal("sa.key holds no PEM block")
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithHeader("kid", jws.Signatures[0].Header.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := signed.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
