package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are the PEM files of a cluster started with Options.ClientTLS:
// the CA that signed the members' and the client's certificates, and a
// client certificate the members accept. OtherCA* is a second CA and a
// client certificate it signed, which the members refuse.
type TLSFiles struct {
	CAFile, ClientCertFile, ClientKeyFile   string
	OtherClientCertFile, OtherClientKeyFile string
	// serverCert, serverKey are the members' certificate and key.
	serverCert, serverKey string
}

// TLS returns the cluster's certificate files; empty without
// Options.ClientTLS.
func (c *Cluster) TLS() TLSFiles { return c.tls }

// makeTLS writes a CA, a server certificate for 127.0.0.1 and two client
// certificates (one from another CA) into a temporary directory.
func makeTLS(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCert(t, "coffer test CA", nil, nil, true)
	other, otherKey := newCert(t, "another CA", nil, nil, true)
	srv, srvKey := newCert(t, "etcd member", ca, caKey, false)
	cli, cliKey := newCert(t, "coffer replica", ca, caKey, false)
	bad, badKey := newCert(t, "stranger", other, otherKey, false)
	files := TLSFiles{
		CAFile:              write(t, dir, "ca.pem", "CERTIFICATE", ca.Raw),
		serverCert:          write(t, dir, "server.pem", "CERTIFICATE", srv.Raw),
		serverKey:           write(t, dir, "server-key.pem", "EC PRIVATE KEY", marshalKey(t, srvKey)),
		ClientCertFile:      write(t, dir, "client.pem", "CERTIFICATE", cli.Raw),
		ClientKeyFile:       write(t, dir, "client-key.pem", "EC PRIVATE KEY", marshalKey(t, cliKey)),
		OtherClientCertFile: write(t, dir, "other.pem", "CERTIFICATE", bad.Raw),
		OtherClientKeyFile:  write(t, dir, "other-key.pem", "EC PRIVATE KEY", marshalKey(t, badKey)),
	}
	return files
}

func newCert(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage, tmpl.IPAddresses, tmpl.DNSNames = nil, nil, nil
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func marshalKey(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func write(t testing.TB, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
