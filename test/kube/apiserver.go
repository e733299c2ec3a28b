package kube

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cofferkms/coffer/test/proc"
)

// AdminToken is the bearer token of the apiserver's admin user (group
// system:masters).
const AdminToken = "admintoken"

// TokenUser is a line of the apiserver's --token-auth-file.
type TokenUser struct {
	Token, Name, UID string
	Groups           []string
}

// APIServerOptions configure StartAPIServer.
type APIServerOptions struct {
	// EncryptionConfig is the EncryptionConfiguration YAML; empty means
	// none (everything stored in plaintext). See EncryptionConfig and
	// IdentityConfig.
	EncryptionConfig string
	// Users are token users besides the admin (for RBAC tests).
	Users []TokenUser
	// ExtraArgs are appended to the apiserver's flags.
	ExtraArgs []string
}

// APIServer is a kube-apiserver on a free loopback port.
type APIServer struct {
	// URL is https://127.0.0.1:PORT.
	URL  string
	t    testing.TB
	etcd *Etcd
	dir  string
	port int
	opts APIServerOptions
	p    *proc.Proc
}

// KMSProviderName is the kms provider name EncryptionConfig uses, so
// values are stored with the prefix "k8s:enc:kms:v2:coffer:".
const KMSProviderName = "coffer"

// EncryptionConfig returns an EncryptionConfiguration that encrypts the
// resources (default secrets and configmaps) with the KMS v2 plugin on
// socket, and still reads plaintext (identity) objects.
func EncryptionConfig(socket string, resources ...string) string {
	if len(resources) == 0 {
		resources = []string{"secrets", "configmaps"}
	}
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [%s]
    providers:
      - kms:
          apiVersion: v2
          name: %s
          endpoint: unix://%s
          timeout: 3s
      - identity: {}
`, strings.Join(resources, ", "), KMSProviderName, socket)
}

// IdentityConfig returns an EncryptionConfiguration that writes the
// resources in plaintext but can still read what the KMS v2 plugin on
// socket encrypted (socket "" leaves the kms provider out).
func IdentityConfig(socket string, resources ...string) string {
	if len(resources) == 0 {
		resources = []string{"secrets", "configmaps"}
	}
	kms := ""
	if socket != "" {
		kms = fmt.Sprintf(`      - kms:
          apiVersion: v2
          name: %s
          endpoint: unix://%s
          timeout: 3s
`, KMSProviderName, socket)
	}
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [%s]
    providers:
      - identity: {}
%s`, strings.Join(resources, ", "), kms)
}

// StartAPIServer starts kube-apiserver against etcd and waits for /readyz.
func StartAPIServer(t testing.TB, etcd *Etcd, opts APIServerOptions) *APIServer {
	t.Helper()
	APIServerBin(t)
	a := &APIServer{t: t, etcd: etcd, dir: tempDir(t), opts: opts}
	dumpOnFailure(t, "kube-apiserver", func() *proc.Proc { return a.p })
	a.writeFiles()
	a.port = proc.FreePort(t)
	a.URL = "https://" + proc.HostPort(a.port)
	a.start()
	t.Cleanup(a.Stop)
	return a
}

func (a *APIServer) writeFiles() {
	t := a.t
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(a.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	var tokens strings.Builder
	fmt.Fprintf(&tokens, "%s,admin,admin,system:masters\n", AdminToken)
	for _, u := range a.opts.Users {
		uid := u.UID
		if uid == "" {
			uid = u.Name
		}
		fmt.Fprintf(&tokens, "%s,%s,%s", u.Token, u.Name, uid)
		if len(u.Groups) > 0 {
			fmt.Fprintf(&tokens, ",\"%s\"", strings.Join(u.Groups, ","))
		}
		tokens.WriteString("\n")
	}
	write("tokens.csv", []byte(tokens.String()))
	write("encryption.yaml", []byte(a.opts.EncryptionConfig))
}

func (a *APIServer) args() []string {
	args := []string{
		"--etcd-servers=" + a.etcd.URL,
		fmt.Sprintf("--secure-port=%d", a.port),
		"--bind-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(a.dir, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(a.dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(a.dir, "sa.key"),
		"--authorization-mode=RBAC",
		"--token-auth-file=" + filepath.Join(a.dir, "tokens.csv"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--v=1",
	}
	if a.opts.EncryptionConfig != "" {
		args = append(args, "--encryption-provider-config="+filepath.Join(a.dir, "encryption.yaml"),
			"--encryption-provider-config-automatic-reload=true")
	}
	return append(args, a.opts.ExtraArgs...)
}

func (a *APIServer) start() {
	a.t.Helper()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		a.p, err = proc.Start("kube-apiserver", APIServerBin(a.t), a.args(), nil, filepath.Join(a.dir, "apiserver.log"))
		if err != nil {
			a.t.Fatal(err)
		}
		if err = a.waitReady(Patience()); err == nil {
			return
		}
		a.p.Stop(10 * time.Second)
		if strings.Contains(a.p.Tail(20000), "address already in use") {
			time.Sleep(time.Second)
			continue
		}
		break
	}
	a.t.Fatalf("kube-apiserver did not become ready: %v\n%s", err, a.p.Tail(6000))
}

func (a *APIServer) waitReady(timeout time.Duration) error {
	return proc.WaitFor(timeout, 100*time.Millisecond, func() error {
		if a.p.Exited() {
			return proc.Permanent(fmt.Errorf("kube-apiserver exited: %v", a.p.Err()))
		}
		code, body, err := a.RawGet("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz: %d: %s", code, body)
		}
		return nil
	})
}

// Stop stops the apiserver. It is idempotent.
func (a *APIServer) Stop() { a.p.Stop(15 * time.Second) }

// Restart stops the apiserver and starts it again on the same port (with
// the current EncryptionConfig), and waits for /readyz.
func (a *APIServer) Restart() {
	a.t.Helper()
	a.Stop()
	a.start()
}

// SetEncryptionConfig replaces the EncryptionConfiguration file. The
// apiserver reloads it by itself only about once a minute; call Restart to
// apply it at once.
func (a *APIServer) SetEncryptionConfig(yaml string) {
	a.t.Helper()
	a.opts.EncryptionConfig = yaml
	if err := os.WriteFile(filepath.Join(a.dir, "encryption.yaml"), []byte(yaml), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

// SetExtraArgs replaces APIServerOptions.ExtraArgs for the next Restart.
func (a *APIServer) SetExtraArgs(args ...string) { a.opts.ExtraArgs = args }

// RESTConfig returns a client config for the admin user. The apiserver's
// certificate is self-signed, so TLS verification is off (loopback only).
func (a *APIServer) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            a.URL,
		BearerToken:     AdminToken,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             1000,
		Burst:           2000,
		Timeout:         60 * time.Second,
	}
}

// UserConfig returns a client config for a token user.
func (a *APIServer) UserConfig(token string) *rest.Config {
	c := a.RESTConfig()
	c.BearerToken = token
	return c
}

// Clientset returns a clientset for the admin user.
func (a *APIServer) Clientset() *kubernetes.Clientset {
	a.t.Helper()
	cs, err := kubernetes.NewForConfig(a.RESTConfig())
	if err != nil {
		a.t.Fatal(err)
	}
	return cs
}

// Kubeconfig writes a kubeconfig file for the admin user (context "kube")
// and returns its path.
func (a *APIServer) Kubeconfig() string {
	a.t.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kube
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: kube
  context:
    cluster: kube
    user: admin
current-context: kube
`, a.URL, AdminToken)
	p := filepath.Join(a.dir, "kubeconfig")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		a.t.Fatal(err)
	}
	return p
}

var rawClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// RawGet sends GET path (for example "/healthz/kms-providers" or
// "/readyz?verbose") as the admin and returns the status code and body.
func (a *APIServer) RawGet(path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, a.URL+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+AdminToken)
	resp, err := rawClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
