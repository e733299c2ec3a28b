package kube_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cofferkms/coffer/internal/k8sauth"
	"github.com/cofferkms/coffer/test/kube"
)

// TestK8sAuthEndToEnd verifies service-account tokens minted by a real
// kube-apiserver (TokenRequest API) in both modes of internal/k8sauth: the
// JWKS from OIDC discovery, and the TokenReview API.
func TestK8sAuthEndToEnd(t *testing.T) {
	kube.RequireE2E(t)
	ctx := context.Background()
	etcd := kube.StartEtcd(t)
	// kube-apiserver advertises jwks_uri at its external host, by default
	// its advertise address (a host interface it does not listen on here);
	// point it at the loopback address it serves on.
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{ExtraArgs: []string{"--external-hostname=127.0.0.1"}})
	start := time.Now()
	ca := apiserverCA(t, api.URL)
	cs := api.Clientset()

	const issuer = "https://kubernetes.default.svc" // the harness's --service-account-issuer
	nsA, nsB := "k8sauth-a", "k8sauth-b"
	saA := createSA(t, cs, nsA, "app")
	saB := createSA(t, cs, nsB, "other")
	tokA := requestToken(t, cs, nsA, "app", "coffer")
	tokVault := requestToken(t, cs, nsA, "app", "vault")
	tokB := requestToken(t, cs, nsB, "other", "coffer")
	tokAPI := requestToken(t, cs, nsA, "app") // for the apiserver's own audience (the issuer)
	minted := time.Now()

	checkID := func(t *testing.T, id k8sauth.Identity, sa *corev1.ServiceAccount) {
		t.Helper()
		if id.Namespace != sa.Namespace || id.ServiceAccount != sa.Name || id.ServiceAccountUID != string(sa.UID) {
			t.Errorf("identity %s/%s uid %s, want %s/%s uid %s", id.Namespace, id.ServiceAccount, id.ServiceAccountUID, sa.Namespace, sa.Name, sa.UID)
		}
		if id.Issuer != issuer || !slices.Contains(id.Audiences, "coffer") || id.PodName != "" || id.PodUID != "" {
			t.Errorf("identity %+v: want issuer %s, audience coffer, no pod", id, issuer)
		}
		if d := id.Expiry.Sub(minted); d < 9*time.Minute || d > 11*time.Minute {
			t.Errorf("expiry %s is %s after minting, want about 600s", id.Expiry, d)
		}
		if id.IssuedAt.IsZero() || id.IssuedAt.After(time.Now().Add(k8sauth.Leeway)) {
			t.Errorf("issued at %s", id.IssuedAt)
		}
	}
	refused := func(t *testing.T, err, want error, reason, token string) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("error %v, want %v", err, want)
		}
		if !strings.Contains(err.Error(), reason) {
			t.Errorf("error %q does not say %q", err, reason)
		}
		for _, seg := range append(strings.Split(token, "."), token) {
			if len(seg) >= 16 && strings.Contains(err.Error(), seg) {
				t.Errorf("error %q contains the token or a segment of it", err)
			}
		}
	}

	var jwksVerifier *k8sauth.JWKSVerifier
	t.Run("JWKS", func(t *testing.T) {
		gotIssuer, jwks, err := k8sauth.Discover(ctx, k8sauth.DiscoveryConfig{URL: api.URL, CAPEM: ca, BearerToken: kube.AdminToken})
		if err != nil {
			t.Fatal(err)
		}
		if gotIssuer != issuer {
			t.Fatalf("discovered issuer %q, want %q", gotIssuer, issuer)
		}
		if jwksVerifier, err = k8sauth.NewJWKSVerifier(gotIssuer, jwks, nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("discovered issuer %s, keys %q", gotIssuer, jwksVerifier.KeyIDs())

		id, err := jwksVerifier.Verify(ctx, tokA, "coffer")
		if err != nil {
			t.Fatal(err)
		}
		checkID(t, id, saA)

		_, err = jwksVerifier.Verify(ctx, tokVault, "coffer")
		refused(t, err, k8sauth.ErrInvalidToken, `audience: token is for ["vault"], want "coffer"`, tokVault)
		_, err = jwksVerifier.Verify(ctx, tokA, "vault")
		refused(t, err, k8sauth.ErrInvalidToken, `want "vault"`, tokA)

		// Another namespace's token verifies as that namespace; whether
		// it may use a role is decided above this package.
		id, err = jwksVerifier.Verify(ctx, tokB, "coffer")
		if err != nil {
			t.Fatal(err)
		}
		checkID(t, id, saB)

		// A token signed by the apiserver but for an audience we did not
		// ask for: refused; with a tampered payload: bad signature.
		_, err = jwksVerifier.Verify(ctx, tokAPI, "coffer")
		refused(t, err, k8sauth.ErrInvalidToken, `token is for ["https://kubernetes.default.svc"]`, tokAPI)
		parts := strings.Split(tokA, ".")
		forged := strings.Join([]string{parts[0], strings.Split(tokB, ".")[1], parts[2]}, ".")
		_, err = jwksVerifier.Verify(ctx, forged, "coffer")
		refused(t, err, k8sauth.ErrInvalidToken, "signature does not verify", forged)

		// Discovery: anonymous is refused by default; a service account's
		// own token (the apiserver's audience) is enough.
		_, _, err = k8sauth.Discover(ctx, k8sauth.DiscoveryConfig{URL: api.URL, CAPEM: ca})
		if !errors.Is(err, k8sauth.ErrUnavailable) {
			t.Errorf("anonymous discovery: %v, want ErrUnavailable", err)
		}
		if _, _, err = k8sauth.Discover(ctx, k8sauth.DiscoveryConfig{URL: api.URL, CAPEM: ca, BearerToken: tokAPI}); err != nil {
			t.Errorf("discovery with a service account's token: %v", err)
		}
	})

	t.Run("TokenReview", func(t *testing.T) {
		v, err := k8sauth.NewTokenReviewVerifier(k8sauth.TokenReviewConfig{APIServer: api.URL, CAPEM: ca, ReviewerToken: kube.AdminToken})
		if err != nil {
			t.Fatal(err)
		}
		id, err := v.Verify(ctx, tokA, "coffer")
		if err != nil {
			t.Fatal(err)
		}
		checkID(t, id, saA)
		if !slices.Equal(id.Audiences, []string{"coffer"}) {
			t.Errorf("audiences %q", id.Audiences)
		}
		id, err = v.Verify(ctx, tokB, "coffer")
		if err != nil {
			t.Fatal(err)
		}
		checkID(t, id, saB)

		_, err = v.Verify(ctx, tokVault, "coffer")
		refused(t, err, k8sauth.ErrInvalidToken, "audience", tokVault)
		t.Logf("wrong audience: %v", err)

		bad, err := k8sauth.NewTokenReviewVerifier(k8sauth.TokenReviewConfig{APIServer: api.URL, CAPEM: ca, ReviewerToken: "not-a-user"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = bad.Verify(ctx, tokA, "coffer")
		refused(t, err, k8sauth.ErrUnavailable, "401", tokA)

		// Delete the service account: the apiserver refuses its tokens
		// from then on; the JWKS check, offline, still accepts them until
		// they expire.
		if err := cs.CoreV1().ServiceAccounts(nsA).Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The apiserver caches a successful authentication for 10 s, so
		// the refusal can take that long (longer on a loaded machine).
		deleted := time.Now()
		deadline := deleted.Add(kube.Patience())
		for {
			_, err = v.Verify(ctx, tokA, "coffer")
			if err != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		refused(t, err, k8sauth.ErrInvalidToken, "the apiserver rejected the token", tokA)
		t.Logf("%s after deleting the service account: %v", time.Since(deleted).Round(time.Millisecond), err)
		if jwksVerifier != nil {
			if _, err := jwksVerifier.Verify(ctx, tokA, "coffer"); err != nil {
				t.Errorf("JWKS mode after the deletion: %v (expected to still accept: it cannot see deletions)", err)
			}
		}
	})

	// How long the checks took is logged, not asserted: on a loaded CI
	// machine a wall-clock budget fails tests that are right.
	t.Logf("checks took %s after the apiserver was up", time.Since(start).Round(time.Millisecond))
}

// apiserverCA returns the CA certificate of the apiserver's self-signed
// serving chain, in PEM. The harness keeps the file in its private cert
// dir; the TLS handshake presents the chain (serving certificate, then
// its CA), so the test takes the CA from there once, on loopback, and
// everything after verifies against it, host name included.
func apiserverCA(t *testing.T, url string) []byte {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, c := range conn.ConnectionState().PeerCertificates {
		if c.IsCA {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	t.Fatal("the apiserver's TLS chain has no CA certificate")
	return nil
}

func createSA(t *testing.T, cs *kubernetes.Clientset, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// requestToken mints a 600 s token for ns/name with the TokenRequest API
// (no audiences means the apiserver's own).
func requestToken(t *testing.T, cs *kubernetes.Clientset, ns, name string, audiences ...string) string {
	t.Helper()
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}
