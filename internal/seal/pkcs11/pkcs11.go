// Package pkcs11 is the auto-unseal through an HSM: a key in a PKCS#11
// token wraps Coffer's root key, so the root key opens only while the token
// is reachable and the PIN is right.
//
// The library is loaded by New; C_Initialize, the session and the login
// happen at the first use, so a server whose HSM does not answer yet starts,
// stays sealed and retries. A session that the HSM dropped (a restart, a
// removed device, a finalized library) is opened again and the operation
// retried once. A PIN the token refused is never tried again by the same
// Seal: real HSMs lock the token after a few wrong PINs.
package pkcs11

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"unsafe"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferkms/coffer/internal/seal"
)

// Type is the name of this seal in the configuration and in seal-status.
const Type = "pkcs11"

// maxPINFile bounds how much of a PIN file is read: PINs are short, and a
// PIN file pointed at something large is a mistake to report.
const maxPINFile = 1024

// Seal wraps the root key with a key in a PKCS#11 token. It is safe for
// concurrent use; operations are serialized over one session.
type Seal struct {
	cfg  Config
	mech mechanism
	mod  *module

	// lock is a one-slot semaphore rather than a mutex so that waiting for
	// it respects the caller's context.
	lock chan struct{}

	// The fields below are guarded by lock.
	closed  bool
	hasSess bool
	sess    p11.SessionHandle
	slot    uint
	gen     uint64 // the module generation the session was opened in
	// refusedPIN is an HMAC (under pinMACKey, random per Seal) of the last
	// PIN the token refused: the same PIN is not presented again, a changed
	// PIN file is. It is not the PIN and is useless outside this process.
	refusedPIN []byte
	pinMACKey  [32]byte
}

var _ seal.Seal = (*Seal)(nil)

// Test hooks: loginCalls counts C_Login calls; testHookCall, when set,
// runs before each guarded PKCS#11 step and may panic or fail it;
// testHookVerify sees (and may alter, as a faulty token would) what Wrap's
// self-check unwrapped.
var (
	loginCalls     atomic.Int64
	testHookCall   func(op string) error
	testHookVerify func(unwrapped []byte)
)

// New validates c and loads the PKCS#11 library. It does not talk to the
// token: that happens at the first Wrap, Unwrap, Health or EnsureKey.
// Errors wrap seal.ErrMisconfigured.
func New(c Config) (*Seal, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Mechanism == "" {
		c.Mechanism = MechanismAESGCM
	}
	mech, _ := mechanismOf(c.Mechanism)
	mod, err := openModule(c.Library)
	if err != nil {
		return nil, err
	}
	s := &Seal{cfg: c, mech: mech, mod: mod, lock: make(chan struct{}, 1)}
	if _, err := rand.Read(s.pinMACKey[:]); err != nil {
		mod.release()
		return nil, fmt.Errorf("pkcs11 seal: random: %w", err)
	}
	return s, nil
}

// Type returns "pkcs11".
func (s *Seal) Type() string { return Type }

// Info describes the seal: library, token, key label and mechanism, and
// where the PIN comes from (the file or variable name, never the PIN).
func (s *Seal) Info() map[string]string {
	info := map[string]string{
		"type":         Type,
		"library":      s.cfg.Library,
		"key_label":    s.cfg.KeyLabel,
		"mechanism":    s.cfg.Mechanism,
		"generate_key": strconv.FormatBool(s.cfg.GenerateKey),
	}
	if s.cfg.Slot != nil {
		info["slot"] = strconv.FormatUint(uint64(*s.cfg.Slot), 10)
	} else {
		info["token_label"] = s.cfg.TokenLabel
	}
	if s.cfg.PINFile != "" {
		info["pin_file"] = s.cfg.PINFile
	} else {
		info["pin_env"] = s.cfg.PINEnv
	}
	return info
}

// EnsureKey makes sure the configured key exists and is usable: it finds
// it, and when generate_key is set and no key has the label, creates it.
// The server calls it at init before the first Wrap; Wrap does the same by
// itself when generate_key is set, so calling it is optional. Unwrap and
// Health never create a key: a new key could never open an existing blob,
// and creating one would hide the real fault (another token, a deleted
// key). A missing key without generate_key wraps seal.ErrMisconfigured.
func (s *Seal) EnsureKey(ctx context.Context) error {
	return s.do(ctx, "find the key", func(sh p11.SessionHandle) error {
		_, err := s.findKeys(sh, s.cfg.GenerateKey, true)
		return err
	})
}

// Health opens the session (logging in) and finds the key; nothing secret
// is wrapped.
func (s *Seal) Health(ctx context.Context) error {
	return s.do(ctx, "health", func(sh p11.SessionHandle) error {
		_, err := s.findKeys(sh, false, false)
		return err
	})
}

// Wrap encrypts the 32-byte root key with the token's key and returns the
// blob (format in blob.go). Before returning, it opens the blob again with
// the token, so that a key that can encrypt but not decrypt (or an RSA
// public key without its private half) fails at init instead of at the
// next unseal.
func (s *Seal) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	if len(plaintext) != rootKeySize {
		return nil, fmt.Errorf("pkcs11 seal: Wrap takes the %d-byte root key, got %d bytes", rootKeySize, len(plaintext))
	}
	var out []byte
	err := s.do(ctx, "wrap", func(sh p11.SessionHandle) error {
		k, err := s.findKeys(sh, s.cfg.GenerateKey, true)
		if err != nil {
			return err
		}
		b, err := s.wrap(sh, k, plaintext)
		if err != nil {
			return err
		}
		got, err := s.unwrap(sh, k, b)
		if sessionLost(err) {
			return err
		}
		if err != nil {
			return fmt.Errorf("pkcs11 seal: key %q wrapped the root key but cannot open what it wrapped (%v); check the key's decrypt/unwrap permission and, for rsa-oaep, that the public and private keys are a pair: %w",
				s.cfg.KeyLabel, err, seal.ErrMisconfigured)
		}
		if testHookVerify != nil {
			testHookVerify(got)
		}
		same := subtle.ConstantTimeCompare(got, plaintext) == 1
		clear(got)
		if !same {
			return fmt.Errorf("pkcs11 seal: key %q opened what it wrapped to another value; the token is faulty: %w", s.cfg.KeyLabel, seal.ErrMisconfigured)
		}
		out = b.marshal()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Unwrap opens a blob Wrap returned. A blob that is malformed, of another
// mechanism or key, or that the token refuses to decrypt wraps
// seal.ErrBlob; a missing key, a wrong PIN or an unusable key wraps
// seal.ErrMisconfigured.
func (s *Seal) Unwrap(ctx context.Context, data []byte) ([]byte, error) {
	b, err := parseBlob(data)
	if err != nil {
		return nil, err
	}
	if b.mech != s.mech {
		return nil, fmt.Errorf("pkcs11 seal: the root key was wrapped with %s but this seal is configured for %s: %w", b.mech, s.mech, seal.ErrBlob)
	}
	if b.keyLabel != s.cfg.KeyLabel {
		return nil, fmt.Errorf("pkcs11 seal: the root key was wrapped by the key labelled %q but this seal uses %q: %w", b.keyLabel, s.cfg.KeyLabel, seal.ErrBlob)
	}
	var out []byte
	err = s.do(ctx, "unwrap", func(sh p11.SessionHandle) error {
		k, err := s.findKeys(sh, false, false)
		if err != nil {
			return err
		}
		if !bytes.Equal(k.id, b.keyID) {
			return fmt.Errorf("pkcs11 seal: the root key was wrapped by the key labelled %q with CKA_ID %x, but the token's key of that label has CKA_ID %x (replaced?): %w",
				b.keyLabel, b.keyID, k.id, seal.ErrBlob)
		}
		out, err = s.unwrap(sh, k, b)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Close closes the session and releases the library; the seal is unusable
// afterwards. It is idempotent.
func (s *Seal) Close() error {
	s.lock <- struct{}{}
	defer func() { <-s.lock }()
	if s.closed {
		return nil
	}
	s.closed = true
	s.dropSession()
	s.mod.release()
	return nil
}

// do runs fn over the seal's session, opening it (and logging in) first if
// needed. When the session, the login or the library was lost (an HSM
// restart, a removed device, a finalized library), it re-establishes them
// and runs fn once more; other errors are returned as they are.
func (s *Seal) do(ctx context.Context, op string, fn func(p11.SessionHandle) error) error {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("pkcs11 seal: %s: %w", op, ctx.Err())
	}
	defer func() { <-s.lock }()
	if s.closed {
		return fmt.Errorf("pkcs11 seal: %s: the seal is closed", op)
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("pkcs11 seal: %s: %w", op, cerr)
		}
		err = nil
		if !s.hasSess {
			err = s.openSession()
		}
		if err == nil && s.hasSess {
			err = recovered(op, func() error { return fn(s.sess) })
		}
		if err == nil {
			return nil
		}
		var p panicError
		if errors.As(err, &p) {
			// The session may be in the middle of an operation: start over
			// with a new one next time.
			s.dropSession()
			return err
		}
		if !sessionLost(err) {
			return err
		}
		s.dropSession()
		if libraryLost(err) {
			if rerr := s.mod.reinit(s.gen); rerr != nil {
				return rerr
			}
		}
	}
	return fmt.Errorf("pkcs11 seal: %s failed again after the session was re-established: %w", op, err)
}

// openSession finds the slot, opens a read-only session and logs in.
func (s *Seal) openSession() error {
	gen, err := s.mod.ensureInit()
	if err != nil {
		return err
	}
	s.gen = gen
	slot, err := s.findSlot()
	if err != nil {
		return err
	}
	var sh p11.SessionHandle
	err = recovered("C_OpenSession", func() (err error) {
		sh, err = s.mod.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION)
		return err
	})
	if err != nil {
		if sessionLost(err) {
			return err
		}
		return fmt.Errorf("pkcs11 seal: opening a session on %s: %w", s.tokenName(), err)
	}
	s.sess, s.slot, s.hasSess = sh, slot, true
	if err := s.login(sh); err != nil {
		s.dropSession()
		return err
	}
	return nil
}

// dropSession closes the session if there is one; errors do not matter
// (the session may be gone already).
func (s *Seal) dropSession() {
	if !s.hasSess {
		return
	}
	s.hasSess = false
	_ = recovered("C_CloseSession", func() error { return s.mod.ctx.CloseSession(s.sess) })
}

// tokenName describes the configured token for messages.
func (s *Seal) tokenName() string {
	if s.cfg.Slot != nil {
		return fmt.Sprintf("slot %d", *s.cfg.Slot)
	}
	return fmt.Sprintf("the token labelled %q", s.cfg.TokenLabel)
}

// findSlot resolves the configured token to a slot that holds an
// initialized token whose user PIN is set and not locked.
func (s *Seal) findSlot() (uint, error) {
	ctx := s.mod.ctx
	var slots []uint
	if err := recovered("C_GetSlotList", func() (err error) {
		slots, err = ctx.GetSlotList(true)
		return err
	}); err != nil {
		if sessionLost(err) {
			return 0, err
		}
		return 0, fmt.Errorf("pkcs11 seal: listing the slots of %s: %w", s.cfg.Library, err)
	}
	var (
		slot   uint
		found  int
		labels []string
		info   p11.TokenInfo
	)
	for _, id := range slots {
		var ti p11.TokenInfo
		if err := recovered("C_GetTokenInfo", func() (err error) {
			ti, err = ctx.GetTokenInfo(id)
			return err
		}); err != nil {
			continue // a token removed while listing
		}
		label := trimLabel(ti.Label)
		if ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0 {
			labels = append(labels, strconv.Quote(label))
		}
		if (s.cfg.Slot != nil && id == *s.cfg.Slot) || (s.cfg.Slot == nil && label == s.cfg.TokenLabel && ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0) {
			slot, info = id, ti
			found++
		}
	}
	switch {
	case found == 0 && s.cfg.Slot != nil:
		return 0, fmt.Errorf("pkcs11 seal: no token is present in slot %d (slots with a token: %v): %w", *s.cfg.Slot, slots, seal.ErrMisconfigured)
	case found == 0:
		return 0, fmt.Errorf("pkcs11 seal: no token is labelled %q (initialized tokens: %v): %w", s.cfg.TokenLabel, labels, seal.ErrMisconfigured)
	case found > 1:
		return 0, fmt.Errorf("pkcs11 seal: %d tokens are labelled %q; choose one by slot: %w", found, s.cfg.TokenLabel, seal.ErrMisconfigured)
	}
	switch {
	case info.Flags&p11.CKF_TOKEN_INITIALIZED == 0:
		return 0, fmt.Errorf("pkcs11 seal: the token in slot %d is not initialized: %w", slot, seal.ErrMisconfigured)
	case info.Flags&p11.CKF_USER_PIN_LOCKED != 0:
		return 0, fmt.Errorf("pkcs11 seal: the user PIN of %s is locked (too many wrong PINs); the security officer must unlock it: %w", s.tokenName(), seal.ErrMisconfigured)
	case info.Flags&p11.CKF_USER_PIN_INITIALIZED == 0:
		return 0, fmt.Errorf("pkcs11 seal: %s has no user PIN yet; set one (softhsm2-util --init-token sets it, or pkcs11-tool --init-pin): %w", s.tokenName(), seal.ErrMisconfigured)
	}
	return slot, nil
}

// trimLabel removes the blank (and NUL) padding of a fixed-size label.
func trimLabel(l string) string {
	return string(bytes.TrimRight([]byte(l), " \x00"))
}

// login logs the session's application in as the user. A PIN the token
// refused is not presented again (the HMAC in refusedPIN), so a server
// retrying an unseal does not lock the token.
func (s *Seal) login(sh p11.SessionHandle) error {
	pin, err := s.readPIN()
	if err != nil {
		return err
	}
	defer clear(pin)
	mac := hmac.New(sha256.New, s.pinMACKey[:])
	mac.Write(pin)
	sum := mac.Sum(nil)
	if s.refusedPIN != nil && hmac.Equal(sum, s.refusedPIN) {
		return fmt.Errorf("pkcs11 seal: the PIN from %s was refused by %s before and is not tried again (a real HSM locks the token after a few wrong PINs); put the right PIN there: %w",
			s.pinSource(), s.tokenName(), seal.ErrMisconfigured)
	}
	loginCalls.Add(1)
	err = recovered("C_Login", func() error {
		// The binding copies the string into C memory at once; the string
		// aliases pin, which is cleared when login returns, so no copy of
		// the PIN stays on the Go heap.
		return s.mod.ctx.Login(sh, p11.CKU_USER, unsafe.String(unsafe.SliceData(pin), len(pin)))
	})
	runtime.KeepAlive(pin)
	switch {
	case err == nil, isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		s.refusedPIN = nil
		return nil
	case isCode(err, p11.CKR_PIN_INCORRECT):
		s.refusedPIN = sum
		return fmt.Errorf("pkcs11 seal: %s refused the PIN from %s (CKR_PIN_INCORRECT); it will not be tried again, fix it (a real HSM locks the token after a few wrong PINs): %w",
			s.tokenName(), s.pinSource(), seal.ErrMisconfigured)
	case isCode(err, p11.CKR_PIN_LOCKED), isCode(err, p11.CKR_PIN_EXPIRED), isCode(err, p11.CKR_PIN_INVALID), isCode(err, p11.CKR_PIN_LEN_RANGE):
		return fmt.Errorf("pkcs11 seal: logging in to %s with the PIN from %s: %w: %w", s.tokenName(), s.pinSource(), err, seal.ErrMisconfigured)
	case sessionLost(err):
		return err
	}
	return fmt.Errorf("pkcs11 seal: logging in to %s: %w", s.tokenName(), err)
}

// pinSource names where the PIN comes from, for messages.
func (s *Seal) pinSource() string {
	if s.cfg.PINFile != "" {
		return "pin_file " + s.cfg.PINFile
	}
	return "pin_env " + s.cfg.PINEnv
}

// readPIN returns the PIN in a fresh buffer the caller clears.
func (s *Seal) readPIN() ([]byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("pkcs11 seal: %s: %s: %w", s.pinSource(), fmt.Sprintf(format, a...), seal.ErrMisconfigured)
	}
	var pin []byte
	if s.cfg.PINEnv != "" {
		v, ok := os.LookupEnv(s.cfg.PINEnv)
		if !ok {
			return nil, bad("the variable is not set")
		}
		pin = []byte(v)
	} else {
		f, err := os.Open(s.cfg.PINFile)
		if err != nil {
			return nil, bad("cannot be read: %v", errors.Unwrap(err))
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, bad("cannot be read: %v", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, bad("is not a regular file")
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return nil, bad("is accessible to group or others (mode %04o); chmod 600 it", perm)
		}
		buf := make([]byte, maxPINFile+1)
		n, err := io.ReadFull(f, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			clear(buf)
			return nil, bad("cannot be read: %v", err)
		}
		if n > maxPINFile {
			clear(buf)
			return nil, bad("is larger than %d bytes; it should hold only the PIN", maxPINFile)
		}
		pin = buf[:n]
	}
	n := len(pin)
	for n > 0 && (pin[n-1] == '\n' || pin[n-1] == '\r') {
		n--
	}
	clear(pin[n:])
	pin = pin[:n]
	if n == 0 {
		return nil, bad("the PIN is empty")
	}
	return pin, nil
}

// panicError is a panic of the binding turned into an error.
type panicError struct{ op string }

func (p panicError) Error() string {
	return "pkcs11 seal: the PKCS#11 binding panicked during " + p.op + "; the session is dropped and opened again at the next call"
}

// recovered runs fn and turns a panic into a panicError. The panic value is
// not reported: it could hold memory the binding was handling.
func recovered(op string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{op: op}
		}
	}()
	if testHookCall != nil {
		if err := testHookCall(op); err != nil {
			return err
		}
	}
	return fn()
}

// isCode reports whether err carries the PKCS#11 return value code.
func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// sessionLost reports an error after which a new session (and login, and
// maybe a re-initialized library) can succeed.
func sessionLost(err error) bool {
	var e p11.Error
	if !errors.As(err, &e) {
		return false
	}
	switch uint(e) {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID:
		return true
	}
	return libraryLost(err)
}

// libraryLost reports an error after which the library is finalized and
// initialized again before a new session.
func libraryLost(err error) bool {
	var e p11.Error
	if !errors.As(err, &e) {
		return false
	}
	switch uint(e) {
	case p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT,
		p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_RECOGNIZED:
		return true
	}
	return false
}
