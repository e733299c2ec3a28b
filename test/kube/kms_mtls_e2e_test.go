package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/kube"
)

// writeCert writes a certificate for cn (signed by caKey/caCert, or self-
// signed as a CA when they are nil) and its key as PEM files in dir.
func writeCert(t *testing.T, dir, name, cn string, caCert *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	parent, signer := tmpl, key
	if caCert == nil {
		tmpl.IsCA, tmpl.KeyUsage = true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	} else {
		parent, signer = caCert, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, certFile, keyFile
}

// TestKMSPluginMTLS: the real kms-plugin on a control-plane node holds no
// token: it logs in to a role with its client certificate over mTLS and
// serves (its health round trip encrypts and decrypts through Coffer). A
// certificate the role does not trust leaves the plugin unready.
func TestKMSPluginMTLS(t *testing.T) {
	kube.RequireE2E(t)
	dir := t.TempDir()
	ca, caKey, caFile, _ := writeCert(t, dir, "ca", "coffer client CA", nil, nil)
	_, _, nodeCert, nodeKey := writeCert(t, dir, "node", "kms-plugin-node1", ca, caKey)
	_, _, webCert, webKey := writeCert(t, dir, "web", "web-frontend", ca, caKey)

	c := kube.StartCofferMTLS(t, caFile)
	if !strings.HasPrefix(c.Addr, "https://") {
		t.Fatalf("server address %q is not https", c.Addr)
	}
	keyID := c.CreateKey("alias/k8s")
	root := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := root.PutPolicy(ctx, "kms-plugin", client.PutPolicyRequest{Document: "statements:\n  - effect: allow\n    actions: [kms:Encrypt, kms:Decrypt]\n    resources: [alias/k8s]\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.CreateRole(ctx, client.Role{Name: "kms-plugin", Policies: []string{"kms-plugin"}, TTL: "10m",
		Certificates: []client.CertificateTrust{{CommonName: "kms-plugin-*"}}}); err != nil {
		t.Fatal(err)
	}

	p := kube.StartPlugin(t, c, kube.PluginOptions{Role: "kms-plugin", ClientCert: nodeCert, ClientKey: nodeKey})
	got := p.WaitKeyID(kube.Patience(), nil)
	if !strings.HasPrefix(got, keyID+":") {
		t.Fatalf("plugin key_id %q, want %s:<version>", got, keyID)
	}

	// Another certificate of the same CA, not trusted by the role: the
	// plugin starts but never becomes ready.
	bad := kube.StartPlugin(t, c, kube.PluginOptions{Role: "kms-plugin", ClientCert: webCert, ClientKey: webKey})
	time.Sleep(3 * time.Second) // three health intervals
	if ok, _, err := bad.Ready(); ok || err != nil {
		t.Fatalf("a plugin with an untrusted certificate: ready=%v err=%v", ok, err)
	}
}
