package tpm

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/google/go-tpm/tpm2"
)

// vectorBlob is a version 1 blob made by swtpm, sealing 32 bytes of 0xAB
// bound to PCR 7. It must keep parsing to the same fields and re-encoding
// to the same bytes: blobs already stored in core/root depend on it.
const vectorBlob = "0101000000800022000bbf67105e885a766abf236cb3441b13af50730493e0ca8de629e96ec5ad73f8e8004e0008000b0000041200208b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b00100020cce662abec0559236a4f5d9f0f142d536f171e7bd05f37d17bf363e043a3b952009e002034da75f9cc3fe767655dc2b4050720f6f66273d886fe5b5e0f49ea7800b440750010b979a270e8687a0cf2dbbf3cac29e2272a7b3171f0291eb073bb2d4b087fd9fd777cfa60155a5fcb6cda98337ff049f65d7ec84f9564423bc0e388361c5aecbd26f478bca2fa3fb0200c1fdba2f38b954a54eb1572182a0e17d2fa7108718abb881737b2a10fbddda03097e30df2e5644010b9fe2943ca3d8d05"

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBlobVector(t *testing.T) {
	raw := mustHex(t, vectorBlob)
	b, err := parseBlob(raw)
	if err != nil {
		t.Fatal(err)
	}
	if b.primary != primaryECCSRK || b.pcrMask != 1<<7 {
		t.Fatalf("primary %d mask %#x", b.primary, b.pcrMask)
	}
	if hex.EncodeToString(b.primaryName) != "000bbf67105e885a766abf236cb3441b13af50730493e0ca8de629e96ec5ad73f8e8" {
		t.Fatalf("primary name %x", b.primaryName)
	}
	if len(b.public) != 0x4e || len(b.private) != 0x9e {
		t.Fatalf("public %d private %d bytes", len(b.public), len(b.private))
	}
	pub, err := unmarshalPublic(b.public)
	if err != nil {
		t.Fatal(err)
	}
	if pub.ObjectAttributes.UserWithAuth || hex.EncodeToString(pub.AuthPolicy.Buffer) != "8b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b" {
		t.Fatalf("policy %x", pub.AuthPolicy.Buffer)
	}
	if !bytes.Equal(b.marshal(), raw) {
		t.Fatal("re-encoding the vector changed it")
	}
	// The encoding of fixed fields is pinned too.
	small := &blob{primary: 1, pcrMask: 0x00800001, primaryName: []byte{0xaa}, public: []byte{0xbb, 0xcc}, private: []byte{0xdd}}
	if got := hex.EncodeToString(small.marshal()); got != "0101008000010001aa0002bbcc0001dd" {
		t.Fatalf("encoding %s", got)
	}
}

// TestPrimaryTemplatePinned: every blob names the primary key by its
// template; a go-tpm upgrade that changed the template would make every
// sealed root key unopenable.
func TestPrimaryTemplatePinned(t *testing.T) {
	const want = "0023000b0003047200000006008000430010000300100020000000000000000000000000000000000000000000000000000000000000000000200000000000000000000000000000000000000000000000000000000000000000"
	if got := hex.EncodeToString(tpm2.Marshal(primaryTemplate())); got != want {
		t.Fatalf("primary template changed:\n got %s\nwant %s", got, want)
	}
	// The sealed object's template: FixedTPM|FixedParent|UserWithAuth|NoDA,
	// no policy, no scheme.
	if got := hex.EncodeToString(tpm2.Marshal(sealedTemplate(nil))); got != "0008000b00000452000000100000" {
		t.Fatalf("sealed template %s", got)
	}
}

// mutate edits the vector blob's public area and re-encodes it.
func mutatePublic(t *testing.T, f func(p *tpm2.TPMTPublic)) []byte {
	t.Helper()
	b, err := parseBlob(mustHex(t, vectorBlob))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := unmarshalPublic(b.public)
	f(pub)
	b.public = tpm2.Marshal(pub)
	return b.marshal()
}

func TestParseBlobRejects(t *testing.T) {
	good := mustHex(t, vectorBlob)
	set := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	cases := map[string][]byte{
		"empty":              nil,
		"short":              good[:5],
		"version 0":          set(0, 0),
		"version 2":          set(0, 2),
		"primary 2":          set(1, 2),
		"PCR above 23":       set(2, 0x01),
		"truncated":          good[:len(good)-1],
		"trailing":           append(bytes.Clone(good), 0),
		"name not SHA-256":   set(9, 0x04),
		"name length":        set(7, 0x21),
		"unbound but policy": func() []byte { b := bytes.Clone(good); b[5] = 0; return b }(),
		"bound but userWithAuth": mutatePublic(t, func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.UserWithAuth = true
		}),
		"bound without policy": mutatePublic(t, func(p *tpm2.TPMTPublic) {
			p.AuthPolicy.Buffer = nil
		}),
		"name alg SHA-1": mutatePublic(t, func(p *tpm2.TPMTPublic) {
			p.NameAlg = tpm2.TPMAlgSHA1
		}),
		"sign attribute": mutatePublic(t, func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.SignEncrypt = true
		}),
		"not fixedTPM": mutatePublic(t, func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.FixedTPM = false
		}),
		"public not canonical": func() []byte {
			b, _ := parseBlob(good)
			b.public = append(b.public, 0)
			return b.marshal()
		}(),
		"empty private": func() []byte {
			b, _ := parseBlob(good)
			b.private = nil
			return b.marshal()
		}(),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := parseBlob(data); !errors.Is(err, seal.ErrBlob) {
				t.Fatalf("parse: %v, want ErrBlob", err)
			}
		})
	}
	// And an unbound blob with a policy-free object parses.
	unbound := mutatePublic(t, func(p *tpm2.TPMTPublic) {
		p.ObjectAttributes.UserWithAuth = true
		p.AuthPolicy.Buffer = nil
	})
	unbound[5] = 0
	if _, err := parseBlob(unbound); err != nil {
		t.Fatalf("unbound blob: %v", err)
	}
	// Unwrap refuses a bad blob before touching the TPM (the device does
	// not exist here).
	s, _ := New(Config{Device: "/nonexistent/tpm"})
	if _, err := s.Unwrap(context.Background(), good[:20]); !errors.Is(err, seal.ErrBlob) {
		t.Fatalf("unwrap of a truncated blob: %v", err)
	}
}

func FuzzParseBlob(f *testing.F) {
	good, _ := hex.DecodeString(vectorBlob)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte{1, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBlob(data)
		if err != nil {
			if !errors.Is(err, seal.ErrBlob) {
				t.Fatalf("error without ErrBlob: %v", err)
			}
			return
		}
		// What parses re-encodes to the same bytes (one encoding per
		// blob) and passes the object checks.
		if !bytes.Equal(b.marshal(), data) {
			t.Fatal("parsed blob re-encodes differently")
		}
	})
}

func TestValidate(t *testing.T) {
	good := []Config{
		{},
		{Device: "/dev/tpmrm0", PCRs: []int{0, 7, 23}},
		{Device: "tcp://127.0.0.1:2321"},
		{Device: "tcp://[::1]:2321"},
		{Device: "/run/swtpm/sock"},
	}
	for _, c := range good {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := []Config{
		{PCRs: []int{24}},
		{PCRs: []int{-1}},
		{PCRs: []int{7, 7}},
		{Device: "dev/tpmrm0"},
		{Device: "tcp://127.0.0.1"},
		{Device: "tcp://127.0.0.1:0"},
		{Device: "tcp://127.0.0.1:70000"},
		{Device: "tcp://:2321"},
	}
	for _, c := range bad {
		err := c.Validate()
		if !errors.Is(err, seal.ErrMisconfigured) {
			t.Errorf("%+v: %v, want ErrMisconfigured", c, err)
		}
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted it", c)
		}
	}
}

func TestInfo(t *testing.T) {
	s, err := New(Config{PCRs: []int{11, 7}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type() != "tpm2" {
		t.Fatal(s.Type())
	}
	info := s.Info()
	if info["device"] != DefaultDevice || info["pcrs"] != "7,11" || info["pcr_bank"] != "sha256" {
		t.Fatalf("%v", info)
	}
	s2, _ := New(Config{Device: "tcp://127.0.0.1:1"})
	if !strings.HasPrefix(s2.Info()["pcrs"], "none") {
		t.Fatalf("%v", s2.Info())
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Unwrap(context.Background(), mustHex(t, vectorBlob)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("unwrap after close: %v", err)
	}
}

func TestWrapLength(t *testing.T) {
	s, _ := New(Config{Device: "/nonexistent/tpm"})
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := s.Wrap(context.Background(), make([]byte, n)); err == nil || !strings.Contains(err.Error(), "32-byte") {
			t.Fatalf("wrap of %d bytes: %v", n, err)
		}
	}
}

func TestDeviceMissing(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "tpmrm0")
	s, _ := New(Config{Device: dev})
	err := s.Health(context.Background())
	if err == nil || errors.Is(err, seal.ErrMisconfigured) || errors.Is(err, seal.ErrBlob) {
		t.Fatalf("missing device: %v, want a plain (transient) error", err)
	}
	if !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("unclear: %v", err)
	}
	// Nothing listening on a TCP port: transient as well.
	port := proc.FreePort(t)
	s2, _ := New(Config{Device: "tcp://127.0.0.1:" + strconv.Itoa(port)})
	if err := s2.Health(context.Background()); err == nil || errors.Is(err, seal.ErrMisconfigured) {
		t.Fatalf("nothing listening: %v", err)
	}
}

func TestNotATPM(t *testing.T) {
	ctx := context.Background()
	// A regular file.
	file := filepath.Join(t.TempDir(), "notatpm")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := New(Config{Device: file})
	if err := s.Health(ctx); !errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), "not a TPM") {
		t.Fatalf("regular file: %v", err)
	}
	// A character device that is not a TPM: /dev/null reads nothing.
	if fi, err := os.Stat("/dev/null"); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		s, _ := New(Config{Device: "/dev/null"})
		if err := s.Health(ctx); !errors.Is(err, seal.ErrMisconfigured) {
			t.Fatalf("/dev/null: %v", err)
		}
	}
	// A TCP server that answers, but not as a TPM (an HTTP server).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Read(make([]byte, 512))
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			}()
		}
	}()
	s3, _ := New(Config{Device: "tcp://" + l.Addr().String()})
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s3.Health(ctx2); !errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), "not a TPM") {
		t.Fatalf("HTTP server: %v", err)
	}
}

// TestBusCarriesNoSecret: with a probe on every command and response, the
// root key never appears in clear (parameter encryption on Create and
// Unseal), neither for an unbound nor for a PCR-bound seal.
func TestBusCarriesNoSecret(t *testing.T) {
	tp := newSwtpm(t)
	key := []byte("0123456789abcdef0123456789ABCDEF")
	for _, pcrs := range [][]int{nil, {23}} {
		s := newSeal(t, tp.device(), pcrs...)
		var seen [][]byte
		s.tap = func(b []byte) { seen = append(seen, bytes.Clone(b)) }
		blob, err := s.Wrap(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Unwrap(context.Background(), blob)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("round trip: %v", err)
		}
		if len(seen) < 10 {
			t.Fatalf("the probe saw only %d messages", len(seen))
		}
		for _, m := range seen {
			if bytes.Contains(m, key[:8]) || bytes.Contains(m, key[24:]) {
				t.Fatalf("PCRs %v: the root key crossed the bus in clear", pcrs)
			}
		}
	}
}

func TestBankMask(t *testing.T) {
	sel := &tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0xff, 0xff, 0xff}},
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0x81, 0x00, 0x80}},
	}}
	if got := bankMask(sel, tpm2.TPMAlgSHA256); got != 1<<0|1<<7|1<<23 {
		t.Fatalf("mask %#x", got)
	}
	if got := bankMask(sel, tpm2.TPMAlgSHA384); got != 0 {
		t.Fatalf("unallocated bank: mask %#x", got)
	}
}
