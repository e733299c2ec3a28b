// Package seal runs the real `coffer server` binary with each auto-unseal
// against a real device: a SoftHSM2 token (PKCS#11), a swtpm (TPM 2.0) and
// a second coffer server (transit). It checks what issue 15 promises end to
// end: init under an auto-unseal returns recovery shares and unseals at
// once, a restart unseals by itself, faults leave the server sealed and
// lose nothing, seal migrations both ways, generate-root and rekey with
// recovery shares. The tests skip unless COFFER_E2E is set; with it set a
// missing softhsm2-util, SoftHSM module or swtpm fails them.
package seal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
)

func TestMain(m *testing.M) { proc.Main(m) }

// requireE2E skips t unless COFFER_E2E is set.
func requireE2E(t testing.TB) {
	t.Helper()
	proc.RequireE2E(t, "the seal end-to-end tests (SoftHSM2, swtpm, real coffer processes)")
}

// patience bounds waits for things that normally take a second or two.
func patience() time.Duration { return proc.Patience(30 * time.Second) }

// ctx bounds one test's calls.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// must fails t on err and returns v.
func must[T any](t testing.TB, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// ---- SoftHSM2 ----

// PINs of the test tokens.
const (
	hsmPIN   = "52719384"
	hsmSOPIN = "90817263"
	badPIN   = "31313131"
)

// softhsmLibs are the standard places of the SoftHSM 2 module.
var softhsmLibs = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// hsm is a SoftHSM2 configuration of the test's own: its token directory
// is in a temp dir; servers get it through SOFTHSM2_CONF.
type hsm struct {
	lib, conf, tokenDir string
	pinFile             string // holds hsmPIN, mode 0600
}

// newHSM writes a SoftHSM2 configuration and creates a token per label.
func newHSM(t testing.TB, labels ...string) *hsm {
	t.Helper()
	h := &hsm{}
	for _, l := range softhsmLibs {
		if _, err := os.Stat(l); err == nil {
			h.lib = l
			break
		}
	}
	if h.lib == "" {
		t.Fatalf("COFFER_E2E is set but no SoftHSM 2 module is in %v (Debian: apt-get install softhsm2)", softhsmLibs)
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Fatal("COFFER_E2E is set but softhsm2-util is not installed (Debian: apt-get install softhsm2)")
	}
	dir := t.TempDir()
	h.tokenDir = filepath.Join(dir, "tokens")
	if err := os.Mkdir(h.tokenDir, 0o700); err != nil {
		t.Fatal(err)
	}
	h.conf = filepath.Join(dir, "softhsm2.conf")
	writeFile(t, h.conf, "directories.tokendir = "+h.tokenDir+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n")
	for _, l := range labels {
		cmd := exec.Command(util, "--init-token", "--free", "--label", l, "--pin", hsmPIN, "--so-pin", hsmSOPIN)
		cmd.Env = append(os.Environ(), h.env()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util --init-token %s: %v\n%s", l, err, out)
		}
	}
	h.pinFile = filepath.Join(dir, "pin")
	writeFile(t, h.pinFile, hsmPIN+"\n")
	return h
}

// env is what a server process needs to find the tokens.
func (h *hsm) env() []string { return []string{"SOFTHSM2_CONF=" + h.conf} }

// p11 is the YAML body of a pkcs11 seal section.
type p11 struct {
	lib, token, pinFile, key string
	generate                 bool
}

// seal is the config for the HSM's library, token and key.
func (h *hsm) seal(token, key string, generate bool) p11 {
	return p11{lib: h.lib, token: token, pinFile: h.pinFile, key: key, generate: generate}
}

func (p p11) yaml() string {
	return fmt.Sprintf("  pkcs11:\n    library: %s\n    token_label: %s\n    pin_file: %s\n    key_label: %s\n    mechanism: aes-gcm\n    generate_key: %t\n",
		p.lib, p.token, p.pinFile, p.key, p.generate)
}

// ---- coffer server processes ----

// tlsFiles are a server certificate and its key, and the CA clients trust.
type tlsFiles struct{ cert, key, ca string }

// server is one `coffer server --config FILE` child process. Its port is
// chosen once, so a restart keeps its address (the transit seal and the
// test's clients rely on that).
type server struct {
	t        testing.TB
	name     string
	dir      string
	port     int
	env      []string
	tls      *tlsFiles
	seal     string // YAML body under seal: ("" for none: Shamir)
	prevSeal string // YAML body under previous_seal:
	logPath  string
	p        *proc.Proc
}

// newServer prepares a server with its storage in a new temp dir; env is
// added to its environment. It does not start it.
func newServer(t testing.TB, name string, env ...string) *server {
	t.Helper()
	s := &server{t: t, name: name, dir: t.TempDir(), port: proc.FreePort(t), env: env}
	s.logPath = filepath.Join(s.dir, "server.log")
	t.Cleanup(func() { s.p.Kill() })
	proc.DumpLogsOnFailure(t, nil, func() []string { return []string{s.logPath} })
	return s
}

// url is the API's base URL.
func (s *server) url() string {
	scheme := "http"
	if s.tls != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s", scheme, proc.HostPort(s.port))
}

func (s *server) writeConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nstorage:\n  path: %s\nrotation_check_interval: 1h\nlog_level: info\naudit:\n  alerts_disabled: true\n",
		proc.HostPort(s.port), filepath.Join(s.dir, "coffer.db"))
	if s.tls != nil {
		fmt.Fprintf(&b, "tls:\n  cert_file: %s\n  key_file: %s\n", s.tls.cert, s.tls.key)
	}
	if s.seal != "" {
		b.WriteString("seal:\n" + s.seal)
	}
	if s.prevSeal != "" {
		b.WriteString("previous_seal:\n" + s.prevSeal)
	}
	p := filepath.Join(s.dir, "coffer.yaml")
	writeFile(s.t, p, b.String())
	return p
}

// start writes the config and runs the server until it prints its
// address; the error (with its output) says why it did not.
func (s *server) start() error {
	s.t.Helper()
	if s.p != nil && !s.p.Exited() {
		s.t.Fatalf("%s: start of a running server", s.name)
	}
	cfg := s.writeConfig()
	p, err := proc.Start("coffer "+s.name, proc.CofferBin(s.t), []string{"server", "--config", cfg},
		append([]string{"COFFER_TOKEN=", "COFFER_ADDR="}, s.env...), s.logPath)
	if err != nil {
		return err
	}
	s.p = p
	_, err = p.WaitLine("Address:", patience())
	return err
}

func (s *server) mustStart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// kill is a crash: SIGKILL.
func (s *server) kill() { s.p.Kill() }

// restart is kill and start.
func (s *server) restart() {
	s.t.Helper()
	s.kill()
	s.mustStart()
}

// client is a Go client of the server with token ("" for none).
func (s *server) client(token string) *client.Client {
	s.t.Helper()
	opts := []client.Option{client.WithToken(token)}
	if s.tls != nil {
		opts = append(opts, client.WithCACertFile(s.tls.ca))
	}
	return must[*client.Client](s.t, "client.New")(client.New(s.url(), opts...))
}

// output is what the current process printed.
func (s *server) output() string { return s.p.Output() }

// ---- waiting for states ----

// status is the server's seal status.
func status(t testing.TB, c *client.Client) *client.SealStatus {
	t.Helper()
	return must[*client.SealStatus](t, "SealStatus")(c.SealStatus(testCtx(t)))
}

// waitStatus polls the seal status until cond returns nil.
func waitStatus(t testing.TB, c *client.Client, timeout time.Duration, cond func(*client.SealStatus) error) *client.SealStatus {
	t.Helper()
	var st *client.SealStatus
	err := proc.WaitFor(timeout, 100*time.Millisecond, func() error {
		var err error
		if st, err = c.SealStatus(context.Background()); err != nil {
			return err
		}
		return cond(st)
	})
	if err != nil {
		t.Fatalf("waiting for the seal status: %v (last: %s)", err, describe(st))
	}
	return st
}

// waitUnsealed waits for /readyz to answer 200 (initialized, unsealed).
func waitUnsealed(t testing.TB, c *client.Client, timeout time.Duration) {
	t.Helper()
	err := proc.WaitFor(timeout, 100*time.Millisecond, func() error {
		ok, err := c.Ready(context.Background())
		if err == nil && !ok {
			err = errors.New("not ready (sealed)")
		}
		return err
	})
	if err != nil {
		st, _ := c.SealStatus(context.Background())
		t.Fatalf("the server did not unseal within %s: %v (status: %s)", timeout, err, describe(st))
	}
}

// sealedWithError waits until the auto-unseal reports a failure and
// returns the status; the server must be sealed.
func sealedWithError(t testing.TB, c *client.Client) *client.SealStatus {
	t.Helper()
	st := waitStatus(t, c, patience(), func(st *client.SealStatus) error {
		if st.Seal == nil || st.Seal.LastUnsealError == "" {
			return errors.New("no auto-unseal error yet")
		}
		return nil
	})
	if !st.Sealed {
		t.Fatalf("the auto-unseal failed but the server is unsealed: %s", describe(st))
	}
	return st
}

func describe(st *client.SealStatus) string {
	if st == nil {
		return "<none>"
	}
	s := fmt.Sprintf("initialized=%t sealed=%t type=%s configured=%s migration_pending=%t progress=%d",
		st.Initialized, st.Sealed, st.Type, st.ConfiguredType, st.MigrationPending, st.Progress)
	if h := st.Seal; h != nil {
		s += fmt.Sprintf(" seal{type=%s healthy=%t health_error=%q last_error=%q retrying=%t failures=%d unseal_seconds=%g by_operator=%t}",
			h.Type, h.Healthy, h.HealthError, h.LastUnsealError, h.Retrying, h.Failures, h.UnsealSeconds, h.SealedByOperator)
	}
	return s
}

// apiCode is the HTTP status and error code of err (0, "" when it is no
// API answer).
func apiCode(err error) (int, string) {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode, ae.Code
	}
	return 0, ""
}

// ---- data written before and after each step ----

// item is one plaintext and its ciphertext.
type item struct {
	plain, ct []byte
	ctx       map[string]string
}

// data is every ciphertext a test wrote; verify decrypts them all.
type data struct{ items []item }

// write encrypts n new plaintexts under key.
func (d *data) write(t testing.TB, c *client.Client, key, tag string, n int) {
	t.Helper()
	ctx := testCtx(t)
	for i := range n {
		pt := make([]byte, 24)
		rand.Read(pt)
		ec := map[string]string{"step": tag, "i": fmt.Sprint(i)}
		r := must[*client.EncryptResponse](t, "Encrypt")(c.Encrypt(ctx, client.EncryptRequest{KeyID: key, Plaintext: pt, Context: ec}))
		d.items = append(d.items, item{pt, r.Ciphertext, ec})
	}
}

// verify decrypts every ciphertext written so far.
func (d *data) verify(t testing.TB, c *client.Client) {
	t.Helper()
	ctx := testCtx(t)
	for i, it := range d.items {
		r, err := c.Decrypt(ctx, client.DecryptRequest{Ciphertext: it.ct, Context: it.ctx})
		if err != nil {
			t.Fatalf("ciphertext %d of %d (step %s): %v", i, len(d.items), it.ctx["step"], err)
		}
		if !bytes.Equal(r.Plaintext, it.plain) {
			t.Fatalf("ciphertext %d (step %s) decrypted to other bytes", i, it.ctx["step"])
		}
	}
}

// initAuto initializes a server under an auto-unseal: recovery shares, no
// unseal shares, and it unseals at once. It returns the response.
func initAuto(t testing.TB, s *server, typ string, n, k int) *client.InitResponse {
	t.Helper()
	c := s.client("")
	ir := must[*client.InitResponse](t, "Init")(c.Init(testCtx(t), client.InitRequest{Shares: n, Threshold: k}))
	if ir.Type != typ || len(ir.Shares) != 0 || len(ir.RecoveryShares) != n || ir.RootToken == "" {
		t.Fatalf("init under %s answered type %q, %d unseal shares, %d recovery shares, root token set %t; want %s, 0, %d, true",
			typ, ir.Type, len(ir.Shares), len(ir.RecoveryShares), ir.RootToken != "", typ, n)
	}
	waitUnsealed(t, c, patience())
	return ir
}

// ---- files ----

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil { // WriteFile keeps an existing mode
		t.Fatal(err)
	}
}

// ---- a test CA for the transit unsealer ----

// newTLS makes a CA and a certificate for 127.0.0.1 signed by it. (The
// unsealer cannot use tls.auto here: that certificate is made anew at
// every start, and the transit seal reads its ca_cert_file once, at start.)
func newTLS(t testing.TB) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	caKey := must[*ecdsa.PrivateKey](t, "key")(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "seal e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER := must[[]byte](t, "CA")(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must[*x509.Certificate](t, "CA")(x509.ParseCertificate(caDER))
	key := must[*ecdsa.PrivateKey](t, "key")(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der := must[[]byte](t, "cert")(x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey))
	keyDER := must[[]byte](t, "key")(x509.MarshalPKCS8PrivateKey(key))
	f := &tlsFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), ca: filepath.Join(dir, "ca.pem")}
	writeFile(t, f.ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	writeFile(t, f.cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, f.key, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return f
}

// ---- swtpm ----

// swtpm is a software TPM on loopback TCP; its state directory survives
// restarts (a reboot: same keys, PCRs reset).
type swtpm struct {
	t              testing.TB
	bin, state     string
	port, ctrlPort int
	cmd            *exec.Cmd
	done           chan struct{}
	log            bytes.Buffer
}

// newSwtpm starts a swtpm with a fresh state directory.
func newSwtpm(t testing.TB) *swtpm {
	t.Helper()
	s := &swtpm{t: t, state: t.TempDir()}
	for _, p := range []string{"/usr/bin/swtpm", "/usr/local/bin/swtpm"} {
		if _, err := os.Stat(p); err == nil {
			s.bin = p
			break
		}
	}
	if s.bin == "" {
		if p, err := exec.LookPath("swtpm"); err == nil {
			s.bin = p
		} else {
			t.Fatal("COFFER_E2E is set but swtpm is not installed (Debian: apt-get install swtpm swtpm-tools)")
		}
	}
	ports := proc.FreePorts(t, 2)
	s.port, s.ctrlPort = ports[0], ports[1]
	t.Cleanup(s.stop)
	s.start()
	return s
}

// device is the seal's device string.
func (s *swtpm) device() string { return fmt.Sprintf("tcp://%s", proc.HostPort(s.port)) }

func (s *swtpm) start() {
	s.t.Helper()
	s.log.Reset()
	s.cmd = exec.Command(s.bin, "socket", "--tpm2", "--tpmstate", "dir="+s.state,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.ctrlPort),
		"--flags", "not-need-init,startup-clear")
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	err := proc.WaitFor(10*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-s.done:
			return proc.Permanent(fmt.Errorf("swtpm exited: %s", s.log.String()))
		default:
		}
		c, err := net.DialTimeout("tcp", proc.HostPort(s.port), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		s.t.Fatalf("swtpm does not start: %v", err)
	}
}

func (s *swtpm) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// restart is a reboot of the machine: the PCRs start from zero again.
func (s *swtpm) restart() {
	s.stop()
	s.start()
}

// tpmConn sends TPM commands over a swtpm TCP socket: one command, one
// whole response (a 10-byte header holding the size, then the rest).
type tpmConn struct{ c net.Conn }

func (c tpmConn) Send(cmd []byte) ([]byte, error) {
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c.c, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, fmt.Errorf("TPM response size %d", size)
	}
	rest := make([]byte, size-10)
	if _, err := io.ReadFull(c.c, rest); err != nil {
		return nil, err
	}
	return append(hdr, rest...), nil
}

// extendPCR extends a SHA-256 PCR, as a boot component measuring itself
// does: whatever was sealed to its old value no longer unseals.
func (s *swtpm) extendPCR(pcr int) {
	s.t.Helper()
	nc, err := net.DialTimeout("tcp", proc.HostPort(s.port), 5*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	defer nc.Close()
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{0x5a}, 32)}}},
	}.Execute(tpmConn{nc})
	if err != nil {
		s.t.Fatalf("extending PCR %d: %v", pcr, err)
	}
}

// ---- metrics ----

// metrics fetches /metrics (on the API listener, unauthenticated).
func metrics(t testing.TB, s *server) string {
	t.Helper()
	resp, err := http.Get(s.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return string(b)
}

// metricLine returns the value text of the first sample line starting
// with prefix ("" when there is none).
func metricLine(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok && (v == "" || v[0] == ' ') {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// errorf is fmt.Errorf, for WaitFor conditions.
func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
