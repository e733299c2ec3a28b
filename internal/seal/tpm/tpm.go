// Package tpm is the TPM 2.0 auto-unseal: the root key is sealed to this
// machine's TPM, optionally bound to PCR values (the boot state), so that
// the server unseals itself at start on this machine and nowhere else.
//
// Wrap derives the owner hierarchy's storage primary key from a fixed
// template (the same TPM always derives the same key, so nothing is kept
// in the TPM's NV memory), creates a sealed data object under it holding
// the root key, with a PolicyPCR authorization policy when PCRs are
// configured, and returns the object's public and private areas in a
// versioned blob (blob.go). Unwrap derives the primary again, loads the
// object and unseals it. Every TPM session used to carry the secret is
// salted with the primary key and encrypts the secret (AES-128 CFB
// parameter encryption), so the root key does not cross the bus between
// the CPU and the TPM in clear.
package tpm

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Type is what Seal.Type returns.
const Type = "tpm2"

// keySize is the size of the secret the seal holds: the 32-byte root key.
const keySize = 32

// Config configures the TPM seal (the server's seal.tpm2 section).
type Config struct {
	// Device is the TPM: a character device (default /dev/tpmrm0, the
	// kernel's resource manager), the path of a swtpm unix socket
	// (swtpm socket --server type=unixio,path=...) or tcp://HOST:PORT of
	// a swtpm server (swtpm socket --server type=tcp,port=...).
	Device string `json:"device"`
	// PCRs are the indices of the SHA-256 bank PCRs the root key is bound
	// to: it unseals only while they hold the values they held at Wrap.
	// Empty means not bound to the boot state.
	PCRs []int `json:"pcrs"`
}

// Validate checks the configuration without touching the TPM.
func (c Config) Validate() error {
	if addr, ok := strings.CutPrefix(c.Device, tcpPrefix); ok {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return fmt.Errorf("TPM seal: device %q: want tcp://HOST:PORT: %w", c.Device, seal.ErrMisconfigured)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("TPM seal: device %q: port must be 1-65535: %w", c.Device, seal.ErrMisconfigured)
		}
	} else if c.Device != "" && !filepath.IsAbs(c.Device) {
		return fmt.Errorf("TPM seal: device %q must be an absolute path or tcp://HOST:PORT: %w", c.Device, seal.ErrMisconfigured)
	}
	seen := make(map[int]bool, len(c.PCRs))
	for _, p := range c.PCRs {
		if p < 0 || p > 23 {
			return fmt.Errorf("TPM seal: PCR %d out of range 0-23: %w", p, seal.ErrMisconfigured)
		}
		if seen[p] {
			return fmt.Errorf("TPM seal: PCR %d listed twice: %w", p, seal.ErrMisconfigured)
		}
		seen[p] = true
	}
	return nil
}

// Seal is the TPM 2.0 seal. It opens the TPM for each operation and
// closes it after, so a TPM or swtpm that was down is used again as soon
// as it is back, and a swtpm socket (one client at a time) is not held.
// Operations are serialized.
type Seal struct {
	device  string
	pcrMask uint32

	mu     sync.Mutex
	closed bool
	// tap is handed to each connection (tests: a bus probe).
	tap func([]byte)
}

var _ seal.Seal = (*Seal)(nil)

// New returns a Seal for c. It does no I/O: the TPM is opened by each
// operation, so a server can start while the TPM is not there yet.
func New(c Config) (*Seal, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Seal{device: c.Device}
	if s.device == "" {
		s.device = DefaultDevice
	}
	for _, p := range c.PCRs {
		s.pcrMask |= 1 << uint(p)
	}
	return s, nil
}

// Type returns "tpm2".
func (s *Seal) Type() string { return Type }

// Info describes the seal: the device, the bound PCRs and the key
// hierarchy. It holds no secret.
func (s *Seal) Info() map[string]string {
	pcrs := "none (not bound to the boot state)"
	if s.pcrMask != 0 {
		pcrs = maskString(s.pcrMask)
	}
	return map[string]string{
		"type":     Type,
		"device":   s.device,
		"pcrs":     pcrs,
		"pcr_bank": "sha256",
		"primary":  "owner hierarchy, TCG ECC P-256 SRK template (transient)",
	}
}

// Close marks the seal closed; the TPM is not held between operations.
func (s *Seal) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// withTPM runs f on a fresh connection to the TPM.
func (s *Seal) withTPM(ctx context.Context, f func(t transport.TPM) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("TPM seal: closed")
	}
	c, err := dial(ctx, s.device)
	if err != nil {
		return err
	}
	defer c.Close()
	c.tap = s.tap
	return f(c)
}

// Health derives the storage primary key and flushes it: the TPM answers
// and its owner hierarchy is usable; with PCRs configured, the SHA-256
// bank holds them.
func (s *Seal) Health(ctx context.Context) error {
	return s.withTPM(ctx, func(t transport.TPM) error {
		if s.pcrMask != 0 {
			if err := checkBank(t, s.pcrMask); err != nil {
				return err
			}
		}
		p, err := createPrimary(t)
		if err != nil {
			return err
		}
		flush(t, p.handle)
		return nil
	})
}

// Wrap seals plaintext (the 32-byte root key) to the TPM, bound to the
// configured PCRs' current values, and checks that the blob unseals
// before returning it.
func (s *Seal) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	if len(plaintext) != keySize {
		return nil, fmt.Errorf("TPM seal: wraps a %d-byte root key, got %d bytes", keySize, len(plaintext))
	}
	return s.wrap(ctx, plaintext)
}

// wrap is Wrap without the length check (tests seal other lengths).
func (s *Seal) wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	var out []byte
	err := s.withTPM(ctx, func(t transport.TPM) error {
		p, err := createPrimary(t)
		if err != nil {
			return err
		}
		defer flush(t, p.handle)
		var policy []byte
		if s.pcrMask != 0 {
			if err := checkBank(t, s.pcrMask); err != nil {
				return err
			}
			if policy, err = pcrPolicyDigest(t, s.pcrMask); err != nil {
				return err
			}
		}
		// Salted with the primary and encrypting the first command
		// parameter (inSensitive): the secret crosses the bus encrypted.
		sess, _, err := tpm2.HMACSession(t, tpm2.TPMAlgSHA256, 16, tpm2.Auth(nil),
			tpm2.Salted(p.handle, *p.pub), tpm2.AESEncryption(128, tpm2.EncryptIn))
		if err != nil {
			return tpmError("starting a session", err)
		}
		defer flush(t, sess.Handle())
		secret := bytes.Clone(plaintext)
		defer clear(secret)
		rsp, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: p.handle, Name: p.name, Auth: sess},
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
			}},
			InPublic: tpm2.New2B(sealedTemplate(policy)),
		}.Execute(t)
		if err != nil {
			return tpmError("creating the sealed object", err)
		}
		b := &blob{
			primary:     primaryECCSRK,
			pcrMask:     s.pcrMask,
			primaryName: bytes.Clone(p.name.Buffer),
			public:      bytes.Clone(rsp.OutPublic.Bytes()),
			private:     bytes.Clone(rsp.OutPrivate.Buffer),
		}
		// The blob's own checks and a real unseal: a blob that cannot
		// be opened must never replace a working one.
		enc := b.marshal()
		parsed, err := parseBlob(enc)
		if err != nil {
			return fmt.Errorf("TPM seal: the TPM returned an unexpected sealed object: %w", err)
		}
		got, err := unseal(t, parsed, p)
		if err != nil {
			return fmt.Errorf("TPM seal: checking the new blob: %w", err)
		}
		defer clear(got)
		if subtle.ConstantTimeCompare(got, plaintext) != 1 {
			return errors.New("TPM seal: the new blob unseals to something else; not using it")
		}
		out = enc
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Unwrap unseals the root key from blob. A blob that is malformed, made
// by another TPM or bound to PCR values the TPM no longer has is an error
// wrapping seal.ErrBlob.
func (s *Seal) Unwrap(ctx context.Context, data []byte) ([]byte, error) {
	b, err := parseBlob(data)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = s.withTPM(ctx, func(t transport.TPM) error {
		p, err := createPrimary(t)
		if err != nil {
			return err
		}
		defer flush(t, p.handle)
		out, err = unseal(t, b, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(out) != keySize {
		clear(out)
		return nil, blobError("unsealed %d bytes, not a %d-byte root key", len(out), keySize)
	}
	return out, nil
}

// primary is a loaded storage primary key.
type primary struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    *tpm2.TPMTPublic
}

// primaryTemplate is the TCG ECC P-256 SRK template; the same TPM (same
// owner seed) always derives the same key from it.
func primaryTemplate() tpm2.TPMTPublic { return tpm2.ECCSRKTemplate }

// createPrimary derives the storage primary key. Its name is computed
// from the public area it returned, so that comparing it with a blob's
// primary name checks the key the salt is encrypted to.
func createPrimary(t transport.TPM) (*primary, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(primaryTemplate()),
	}.Execute(t)
	if err != nil {
		if isAuthFailure(err) {
			return nil, fmt.Errorf("TPM seal: the TPM's owner hierarchy has an authorization value; the TPM seal needs it empty (tpm2_changeauth -c owner -p OLD): %w", seal.ErrMisconfigured)
		}
		return nil, tpmError("creating the storage primary key", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err == nil {
		var name *tpm2.TPM2BName
		if name, err = tpm2.ObjectName(pub); err == nil {
			return &primary{handle: rsp.ObjectHandle, name: *name, pub: pub}, nil
		}
	}
	flush(t, rsp.ObjectHandle)
	return nil, fmt.Errorf("TPM seal: the TPM returned a primary key that does not parse: %v", err)
}

// unseal loads b's object under p and unseals it, through a policy
// session (PolicyPCR over the blob's selection) when bound. Every handle
// it creates is flushed before it returns.
func unseal(t transport.TPM, b *blob, p *primary) ([]byte, error) {
	if !bytes.Equal(b.primaryName, p.name.Buffer) {
		return nil, blobError("the root key was sealed by another TPM, or this TPM's owner hierarchy was cleared since (its storage key differs)")
	}
	lr, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle, Name: p.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: b.private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.public),
	}.Execute(t)
	if err != nil {
		if isResponseError(err) {
			return nil, blobError("the TPM refuses to load the sealed object (tampered, or not made by this TPM): %v", err)
		}
		return nil, tpmError("loading the sealed object", err)
	}
	defer flush(t, lr.ObjectHandle)

	// Both session kinds are salted with the primary (whose name was just
	// checked) and encrypt the response parameter, the root key.
	opts := []tpm2.AuthOption{tpm2.Salted(p.handle, *p.pub), tpm2.AESEncryption(128, tpm2.EncryptOut)}
	// The sessions are flushed by handle rather than by go-tpm's closer,
	// which would not run after the context is done.
	var sess tpm2.Session
	if b.pcrMask != 0 {
		sess, _, err = tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, opts...)
	} else {
		sess, _, err = tpm2.HMACSession(t, tpm2.TPMAlgSHA256, 16, append(opts, tpm2.Auth(nil))...)
	}
	if err != nil {
		return nil, tpmError("starting a session", err)
	}
	defer flush(t, sess.Handle())
	if b.pcrMask != 0 {
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(b.pcrMask)}).Execute(t); err != nil {
			return nil, tpmError("running the PCR policy", err)
		}
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: sess}}.Execute(t)
	if err != nil {
		if b.pcrMask != 0 && errors.Is(err, tpm2.TPMRCPolicyFail) {
			return nil, fmt.Errorf("TPM seal: the TPM's PCR values (sha256 bank, PCRs %s) differ from when the root key was sealed (boot chain changed?); only this TPM with the old PCR values can unseal it (undo the boot change, e.g. turn Secure Boot or its old keys back on); recovery shares cannot (docs/operations.md, \"The TPM 2.0 seal\"): %w",
				maskString(b.pcrMask), seal.ErrBlob)
		}
		if isResponseError(err) {
			return nil, blobError("the TPM refuses to unseal: %v", err)
		}
		return nil, tpmError("unsealing", err)
	}
	out := bytes.Clone(rsp.OutData.Buffer)
	clear(rsp.OutData.Buffer)
	return out, nil
}

// checkBank refuses to bind to PCRs the TPM's SHA-256 bank does not have:
// PolicyPCR over unallocated PCRs digests no values at all, so the
// binding would silently bind to nothing.
func checkBank(t transport.TPM, mask uint32) error {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t)
	if err != nil {
		return tpmError("reading the allocated PCR banks", err)
	}
	sel, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return fmt.Errorf("TPM seal: reading the allocated PCR banks: %w", err)
	}
	if missing := mask &^ bankMask(sel, tpm2.TPMAlgSHA256); missing != 0 {
		return fmt.Errorf("TPM seal: the TPM's SHA-256 PCR bank does not hold PCRs %s; enable the SHA-256 bank in the firmware (or tpm2_pcrallocate) or bind to other PCRs: %w",
			maskString(missing), seal.ErrMisconfigured)
	}
	return nil
}

// bankMask is the set of PCRs (0..23) allocated in the hash bank of sel.
func bankMask(sel *tpm2.TPMLPCRSelection, hash tpm2.TPMIAlgHash) uint32 {
	var m uint32
	for _, s := range sel.PCRSelections {
		if s.Hash != hash {
			continue
		}
		for i, b := range s.PCRSelect {
			if i < 3 {
				m |= uint32(b) << (8 * i)
			}
		}
	}
	return m
}

// pcrPolicyDigest computes, in a trial session, the digest of
// PolicyPCR over mask with the PCRs' current values.
func pcrPolicyDigest(t transport.TPM, mask uint32) ([]byte, error) {
	sess, _, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, tpmError("starting a trial policy session", err)
	}
	defer flush(t, sess.Handle())
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(mask)}).Execute(t); err != nil {
		return nil, tpmError("computing the PCR policy (is the SHA-256 PCR bank enabled?)", err)
	}
	d, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
	if err != nil {
		return nil, tpmError("reading the PCR policy digest", err)
	}
	return bytes.Clone(d.PolicyDigest.Buffer), nil
}

// pcrSelection is the SHA-256 bank selection of the PCRs in mask.
func pcrSelection(mask uint32) tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: []byte{byte(mask), byte(mask >> 8), byte(mask >> 16)},
	}}}
}

// maskString lists the PCRs in mask: "7,11".
func maskString(mask uint32) string {
	var s []string
	for i := range 24 {
		if mask&(1<<uint(i)) != 0 {
			s = append(s, strconv.Itoa(i))
		}
	}
	return strings.Join(s, ",")
}

// flush flushes a transient handle or session. It is best effort, and
// runs even when the operation's context is done (a canceled unseal must
// not leave objects behind in a TPM without a resource manager, such as
// swtpm); with /dev/tpmrm0 the kernel flushes them anyway when the
// connection closes.
func flush(t transport.TPM, h tpm2.TPMHandle) {
	if c, ok := t.(*conn); ok {
		if c.broken {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), flushTimeout)
		defer cancel()
		cc := *c
		cc.ctx = ctx
		t = &cc
	}
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// isResponseError reports whether err is the TPM refusing a command (an
// error response code that is not a warning), as opposed to a transport
// failure or a transient warning.
func isResponseError(err error) bool {
	var rc tpm2.TPMRC
	return errors.As(err, &rc) && !rc.IsWarning()
}

// isAuthFailure reports whether err is a failed authorization.
func isAuthFailure(err error) bool {
	return errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail)
}

// tpmError describes a failed TPM operation. Transport errors keep their
// own message (and seal.ErrMisconfigured when wrapped).
func tpmError(op string, err error) error {
	var te *transportError
	if errors.As(err, &te) {
		return err
	}
	var rc tpm2.TPMRC
	if errors.As(err, &rc) && rc.IsWarning() {
		return fmt.Errorf("TPM seal: %s: the TPM is busy or out of resources (retry later): %w", op, err)
	}
	return fmt.Errorf("TPM seal: %s: %w", op, err)
}
