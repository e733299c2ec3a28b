package tpm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/google/go-tpm/tpm2"
)

// swtpm is one software TPM process for a test: its state directory
// survives restarts, like a real TPM's NV memory survives reboots.
type swtpm struct {
	t        testing.TB
	bin      string
	stateDir string
	unixPath string // set: serve on this unix socket instead of TCP
	port     int
	ctrlPort int
	cmd      *exec.Cmd
	done     chan struct{}
	log      *bytes.Buffer
}

// swtpmBinary finds swtpm: tests skip when COFFER_E2E is unset and fail
// when it is set and swtpm is missing.
func swtpmBinary(t testing.TB) string {
	t.Helper()
	if os.Getenv("COFFER_E2E") == "" {
		t.Skip("COFFER_E2E unset: skipping the swtpm tests")
	}
	for _, p := range []string{"/usr/bin/swtpm", "/usr/local/bin/swtpm"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("swtpm"); err == nil {
		return p
	}
	t.Fatal("COFFER_E2E is set but swtpm is not installed (apt-get install swtpm swtpm-tools)")
	return ""
}

// newSwtpm starts a TCP swtpm with a fresh state directory.
func newSwtpm(t testing.TB) *swtpm {
	t.Helper()
	s := &swtpm{t: t, bin: swtpmBinary(t), stateDir: t.TempDir()}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// newUnixSwtpm starts a swtpm serving a unix socket.
func newUnixSwtpm(t testing.TB) *swtpm {
	t.Helper()
	s := &swtpm{t: t, bin: swtpmBinary(t), stateDir: t.TempDir()}
	s.unixPath = filepath.Join(t.TempDir(), "tpm.sock")
	s.start()
	t.Cleanup(s.stop)
	return s
}

// device is the Config.Device string for this swtpm.
func (s *swtpm) device() string {
	if s.unixPath != "" {
		return s.unixPath
	}
	return fmt.Sprintf("tcp://127.0.0.1:%d", s.port)
}

// start starts swtpm (on the ports it had before, if any, so a restart
// keeps the device address) and waits until it answers. A fresh start
// retries with other ports when it loses a bind race.
func (s *swtpm) start() {
	s.t.Helper()
	keepPorts := s.port != 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		if !keepPorts {
			ports := proc.FreePorts(s.t, 2)
			s.port, s.ctrlPort = ports[0], ports[1]
		}
		err := s.launch()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("swtpm does not start: %v\n%s", err, s.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *swtpm) launch() error {
	server := fmt.Sprintf("type=tcp,port=%d", s.port)
	ctrl := fmt.Sprintf("type=tcp,port=%d", s.ctrlPort)
	if s.unixPath != "" {
		server = "type=unixio,path=" + s.unixPath
		ctrl = "type=unixio,path=" + s.unixPath + ".ctrl"
	}
	s.log = new(bytes.Buffer)
	cmd := exec.Command(s.bin, "socket", "--tpm2",
		"--tpmstate", "dir="+s.stateDir,
		"--server", server, "--ctrl", ctrl,
		"--flags", "not-need-init,startup-clear")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			return fmt.Errorf("swtpm exited: %s", cmd.ProcessState)
		default:
		}
		if c, err := dial(context.Background(), s.device()); err == nil {
			c.Close()
			return nil
		}
	}
	s.stop()
	return errors.New("swtpm does not answer")
}

// stop stops swtpm (SIGTERM, then SIGKILL) and waits for it.
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

// restart is a reboot: same state, PCRs reset.
func (s *swtpm) restart() {
	s.stop()
	s.start()
}

// extendPCR extends a PCR of the SHA-256 bank, as a boot component
// measuring itself would.
func (s *swtpm) extendPCR(pcr int) {
	s.t.Helper()
	c, err := dial(context.Background(), s.device())
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{0x42}, 32),
		}}},
	}.Execute(c)
	if err != nil {
		s.t.Fatalf("extending PCR %d: %v", pcr, err)
	}
}

// transientHandles counts the transient objects and loaded sessions in
// the TPM, to check that nothing leaks.
func (s *swtpm) transientHandles() int {
	s.t.Helper()
	c, err := dial(context.Background(), s.device())
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	n := 0
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(c)
		if err != nil {
			s.t.Fatal(err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			s.t.Fatal(err)
		}
		for _, h := range hs.Handle {
			if h>>24 == first>>24 {
				n++
			}
		}
	}
	return n
}

func newSeal(t testing.TB, dev string, pcrs ...int) *Seal {
	t.Helper()
	s, err := New(Config{Device: dev, PCRs: pcrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func rootKey(b byte) []byte { return bytes.Repeat([]byte{b}, keySize) }

func TestRoundTripUnbound(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device())
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(7))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Unwrap(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rootKey(7)) {
		t.Fatal("unwrapped a different key")
	}
	if bytes.Contains(blob, rootKey(7)) {
		t.Fatal("the blob holds the root key in clear")
	}
	b, err := parseBlob(blob)
	if err != nil || b.pcrMask != 0 {
		t.Fatalf("blob: %v, mask %#x", err, b.pcrMask)
	}
	if n := tp.transientHandles(); n != 0 {
		t.Fatalf("%d transient handles or sessions left in the TPM", n)
	}
	if err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
	// Two wraps of the same key differ (fresh seed per sealed object)
	// but both open.
	blob2, err := s.Wrap(ctx, rootKey(7))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(blob, blob2) {
		t.Fatal("two wraps gave the same blob")
	}
}

func TestRoundTripUnixSocket(t *testing.T) {
	tp := newUnixSwtpm(t)
	s := newSeal(t, tp.device(), 23)
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(9))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, rootKey(9)) {
		t.Fatalf("unwrap: %v", err)
	}
}

func TestPCRBound(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device(), 16, 23)
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseBlob(blob)
	if err != nil || b.pcrMask != 1<<16|1<<23 {
		t.Fatalf("blob: %v", err)
	}
	got, err := s.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, rootKey(1)) {
		t.Fatalf("unwrap before the PCR changes: %v", err)
	}
	// An unrelated PCR changing does not matter.
	tp.extendPCR(15)
	if _, err := s.Unwrap(ctx, blob); err != nil {
		t.Fatalf("unwrap after an unbound PCR changed: %v", err)
	}
	tp.extendPCR(23)
	_, err = s.Unwrap(ctx, blob)
	if !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("unwrap after PCR 23 changed: %v, want ErrBlob", err)
	}
	if !strings.Contains(err.Error(), "PCR values") || !strings.Contains(err.Error(), "16,23") || !strings.Contains(err.Error(), "boot chain changed") {
		t.Fatalf("unclear error: %v", err)
	}
	if n := tp.transientHandles(); n != 0 {
		t.Fatalf("%d transient handles or sessions left after a failed unseal", n)
	}
	// A reboot resets the PCRs (16 and 23 start at zero): the key
	// unseals again, as it would after booting the same chain.
	tp.restart()
	got, err = s.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, rootKey(1)) {
		t.Fatalf("unwrap after a reboot: %v", err)
	}
}

func TestSurvivesRestart(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device())
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(3))
	if err != nil {
		t.Fatal(err)
	}
	tp.restart()
	// A new Seal, as after a server restart too.
	s2 := newSeal(t, tp.device())
	got, err := s2.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, rootKey(3)) {
		t.Fatalf("unwrap after restart: %v", err)
	}
}

func TestBlobFromAnotherTPM(t *testing.T) {
	a, b := newSwtpm(t), newSwtpm(t)
	ctx := context.Background()
	blob, err := newSeal(t, a.device()).Wrap(ctx, rootKey(5))
	if err != nil {
		t.Fatal(err)
	}
	sb := newSeal(t, b.device())
	_, err = sb.Unwrap(ctx, blob)
	if !errors.Is(err, seal.ErrBlob) || !strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("unwrap on another TPM: %v, want ErrBlob naming another TPM", err)
	}
	// Even with the primary name copied over, the other TPM cannot load
	// the object: its integrity key derives from a seed it lacks.
	pb, err := parseBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	own, err := sb.Wrap(ctx, rootKey(6))
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := parseBlob(own)
	pb.primaryName = ob.primaryName
	_, err = sb.Unwrap(ctx, pb.marshal())
	if !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("unwrap of a foreign object with a forged primary name: %v, want ErrBlob", err)
	}
	if n := b.transientHandles(); n != 0 {
		t.Fatalf("%d transient handles left", n)
	}
}

func TestTamperedBlob(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device(), 23)
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(8))
	if err != nil {
		t.Fatal(err)
	}
	for i := range blob {
		for _, x := range []byte{0x01, 0x80} {
			bad := bytes.Clone(blob)
			bad[i] ^= x
			got, err := s.Unwrap(ctx, bad)
			if err == nil {
				// Every byte is checked by the parser or the TPM.
				t.Fatalf("byte %d ^ %#x: unwrapped %d bytes from a tampered blob", i, x, len(got))
			}
			if !errors.Is(err, seal.ErrBlob) {
				t.Fatalf("byte %d ^ %#x: %v, want ErrBlob", i, x, err)
			}
		}
	}
	if n := tp.transientHandles(); n != 0 {
		t.Fatalf("%d transient handles left after tampered blobs", n)
	}
}

func TestDeviceDownAndBack(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device(), 16)
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(4))
	if err != nil {
		t.Fatal(err)
	}
	tp.stop()
	_, err = s.Unwrap(ctx, blob)
	if err == nil {
		t.Fatal("unwrap with the TPM down succeeded")
	}
	if errors.Is(err, seal.ErrBlob) || errors.Is(err, seal.ErrMisconfigured) {
		t.Fatalf("TPM down must look transient, got %v", err)
	}
	if err := s.Health(ctx); err == nil {
		t.Fatal("health with the TPM down succeeded")
	}
	tp.start()
	got, err := s.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, rootKey(4)) {
		t.Fatalf("unwrap after the TPM came back: %v", err)
	}
	if err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUnsealLengthChecked(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device())
	ctx := context.Background()
	blob, err := s.wrap(ctx, []byte("sixteen byte key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unwrap(ctx, blob); !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("unwrap of a 16-byte secret: %v, want ErrBlob", err)
	}
}

func TestConcurrent(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device(), 23)
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(2))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.Unwrap(ctx, blob)
			if err == nil && !bytes.Equal(got, rootKey(2)) {
				err = errors.New("wrong key")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestContextCanceled(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Wrap(ctx, rootKey(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("wrap with a canceled context: %v", err)
	}
}

func BenchmarkUnwrap(b *testing.B) {
	for _, bc := range []struct {
		name string
		pcrs []int
	}{{"unbound", nil}, {"pcr7+23", []int{7, 23}}} {
		b.Run(bc.name, func(b *testing.B) {
			tp := newSwtpm(b)
			s := newSeal(b, tp.device(), bc.pcrs...)
			ctx := context.Background()
			blob, err := s.Wrap(ctx, rootKey(1))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Unwrap(ctx, blob); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCancelLeavesNothing cancels Wrap and Unwrap after each message in
// turn: whatever step is interrupted, no object or session stays loaded
// in a TPM that has no resource manager (swtpm).
func TestCancelLeavesNothing(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device(), 23)
	blob, err := s.Wrap(context.Background(), rootKey(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"wrap", "unwrap"} {
		for n := 1; ; n++ {
			ctx, cancel := context.WithCancel(context.Background())
			seen := 0
			s.tap = func([]byte) {
				if seen++; seen == n {
					cancel()
				}
			}
			if op == "wrap" {
				_, err = s.Wrap(ctx, rootKey(1))
			} else {
				_, err = s.Unwrap(ctx, blob)
			}
			cancel()
			s.tap = nil
			if left := tp.transientHandles(); left != 0 {
				t.Fatalf("%s canceled after message %d: %d handles left", op, n, left)
			}
			if err == nil {
				break // canceled after the last message: done
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s canceled after message %d: %v", op, n, err)
			}
			if n > 100 {
				t.Fatal("no end")
			}
		}
	}
}

// run sends one command to the test's swtpm on its own connection.
func (s *swtpm) run(f func(c *conn) error) {
	s.t.Helper()
	c, err := dial(context.Background(), s.device())
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	if err := f(c); err != nil {
		s.t.Fatal(err)
	}
}

// TestOwnerAuthSet: an owner hierarchy with a password is a configuration
// problem, said as such, not a transient failure.
func TestOwnerAuthSet(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device())
	tp.run(func(c *conn) error {
		_, err := tpm2.HierarchyChangeAuth{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("owner-password")},
		}.Execute(c)
		return err
	})
	err := s.Health(context.Background())
	if !errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), "owner hierarchy") {
		t.Fatalf("health with an owner password: %v", err)
	}
	if strings.Contains(err.Error(), "owner-password") {
		t.Fatal("error shows the password")
	}
}

// TestClearedTPM: TPM2_Clear (a TPM reset in the firmware menu) replaces
// the owner seed, so the sealed root key is gone for good; the error says
// so and wraps ErrBlob (the recovery shares are the way back).
func TestClearedTPM(t *testing.T) {
	tp := newSwtpm(t)
	s := newSeal(t, tp.device())
	ctx := context.Background()
	blob, err := s.Wrap(ctx, rootKey(1))
	if err != nil {
		t.Fatal(err)
	}
	tp.run(func(c *conn) error {
		_, err := tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}.Execute(c)
		return err
	})
	_, err = s.Unwrap(ctx, blob)
	if !errors.Is(err, seal.ErrBlob) || !strings.Contains(err.Error(), "cleared") {
		t.Fatalf("unwrap after TPM2_Clear: %v", err)
	}
	// A new Wrap on the cleared TPM works.
	if _, err := s.Wrap(ctx, rootKey(2)); err != nil {
		t.Fatal(err)
	}
}

// TestUnallocatedBank: on a TPM whose SHA-256 bank is switched off,
// binding to PCRs would bind to nothing; Wrap and Health refuse.
func TestUnallocatedBank(t *testing.T) {
	tp := newSwtpm(t)
	// TPM2_PCR_Allocate (not in go-tpm): platform hierarchy, empty
	// password; SHA-1 bank all PCRs, SHA-256 bank none. It takes effect
	// at the next TPM reset.
	cmd := mustHex(t, "80020000002b0000012b"+"4000000c"+"00000009"+"40000009"+"0000"+"00"+"0000"+
		"00000002"+"0004"+"03"+"ffffff"+"000b"+"03"+"000000")
	tp.run(func(c *conn) error {
		rsp, err := c.Send(cmd)
		if err != nil {
			return err
		}
		if rc := binary.BigEndian.Uint32(rsp[6:10]); rc != 0 {
			return fmt.Errorf("PCR_Allocate: rc %#x", rc)
		}
		return nil
	})
	tp.restart()
	s := newSeal(t, tp.device(), 7)
	_, err := s.Wrap(context.Background(), rootKey(1))
	if !errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), "SHA-256 PCR bank") {
		t.Fatalf("wrap bound to an unallocated bank: %v", err)
	}
	if err := s.Health(context.Background()); !errors.Is(err, seal.ErrMisconfigured) {
		t.Fatalf("health: %v", err)
	}
	// Not bound: fine.
	if _, err := newSeal(t, tp.device()).Wrap(context.Background(), rootKey(1)); err != nil {
		t.Fatal(err)
	}
}
