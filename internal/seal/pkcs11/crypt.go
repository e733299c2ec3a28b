package pkcs11

import (
	"crypto/rand"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferkms/coffer/internal/seal"
)

// oaepParams are CKM_RSA_PKCS_OAEP's parameters: SHA-256 and MGF1 with
// SHA-256 (SHA-1 for rsa-oaep-sha1) and an empty label (SoftHSM and many
// HSMs refuse a label, so the blob header is checked field by field
// instead of bound by the label).
func oaepParams(m mechanism) *p11.OAEPParams {
	if m == mechRSAOAEPSHA1 {
		return p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil)
	}
	return p11.NewOAEPParams(p11.CKM_SHA256, p11.CKG_MGF1_SHA256, p11.CKZ_DATA_SPECIFIED, nil)
}

// sessionKeyTemplate describes the session object that carries the root key
// through C_WrapKey/C_UnwrapKey for aes-key-wrap-pad: never a token object,
// private to the login, readable only so that Unwrap can return it, and
// destroyed at once.
func sessionKeyTemplate(value []byte) []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, false),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
	}
	if value != nil {
		t = append(t, p11.NewAttribute(p11.CKA_VALUE, value))
	}
	return t
}

// wrap encrypts plaintext with the key and returns the blob.
func (s *Seal) wrap(sh p11.SessionHandle, k *keySet, plaintext []byte) (*blob, error) {
	ctx := s.mod.ctx
	b := &blob{mech: s.mech, keyLabel: s.cfg.KeyLabel, keyID: k.id}
	switch s.mech {
	case mechAESGCM:
		// The IV is ours, 12 random bytes: a token's default may be another
		// length or a counter the next restart repeats.
		iv := make([]byte, gcmIVSize)
		if _, err := rand.Read(iv); err != nil {
			return nil, fmt.Errorf("pkcs11 seal: random: %w", err)
		}
		gp := p11.NewGCMParams(iv, b.aad(), gcmTagSize*8)
		defer gp.Free()
		if err := ctx.EncryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, gp)}, k.key); err != nil {
			return nil, s.initErr("starting AES-GCM encryption", err)
		}
		ct, err := ctx.Encrypt(sh, plaintext)
		if err != nil {
			return nil, fmt.Errorf("pkcs11 seal: AES-GCM encryption with key %q: %w", s.cfg.KeyLabel, err)
		}
		// Some tokens (CloudHSM) replace the caller's IV with their own;
		// record the one actually used (GCM authenticates it).
		b.iv, b.ciphertext = gp.IV(), ct
	case mechAESKWP:
		obj, err := ctx.CreateObject(sh, sessionKeyTemplate(plaintext))
		if err != nil {
			return nil, fmt.Errorf("pkcs11 seal: creating the session object to wrap: %w", err)
		}
		defer func() { _ = ctx.DestroyObject(sh, obj) }()
		ct, err := ctx.WrapKey(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, k.key, obj)
		if err != nil {
			return nil, s.initErr("wrapping with AES key wrap with padding", err)
		}
		b.ciphertext = ct
	case mechRSAOAEP, mechRSAOAEPSHA1:
		if err := ctx.EncryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, oaepParams(s.mech))}, k.pub); err != nil {
			return nil, s.initErr("starting RSA-OAEP encryption", err)
		}
		ct, err := ctx.Encrypt(sh, plaintext)
		if err != nil {
			return nil, fmt.Errorf("pkcs11 seal: RSA-OAEP encryption with key %q: %w", s.cfg.KeyLabel, err)
		}
		if len(ct) != k.modulusBytes {
			return nil, fmt.Errorf("pkcs11 seal: RSA-OAEP gave %d bytes for a %d-byte modulus: %w", len(ct), k.modulusBytes, seal.ErrMisconfigured)
		}
		b.ciphertext = ct
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("pkcs11 seal: the token's output does not fit the blob format (%v): %w", err, seal.ErrMisconfigured)
	}
	return b, nil
}

// unwrap decrypts a parsed blob with the key; the token refusing the
// ciphertext is ErrBlob.
func (s *Seal) unwrap(sh p11.SessionHandle, k *keySet, b *blob) ([]byte, error) {
	ctx := s.mod.ctx
	var (
		pt  []byte
		err error
	)
	switch b.mech {
	case mechAESGCM:
		gp := p11.NewGCMParams(b.iv, b.aad(), gcmTagSize*8)
		defer gp.Free()
		if err := ctx.DecryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, gp)}, k.key); err != nil {
			return nil, s.initErr("starting AES-GCM decryption", err)
		}
		if pt, err = ctx.Decrypt(sh, b.ciphertext); err != nil {
			return nil, s.blobErr(err)
		}
	case mechAESKWP:
		obj, err := ctx.UnwrapKey(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, k.key, b.ciphertext, sessionKeyTemplate(nil))
		if err != nil {
			if isCode(err, p11.CKR_KEY_FUNCTION_NOT_PERMITTED) || isCode(err, p11.CKR_MECHANISM_INVALID) {
				return nil, s.initErr("unwrapping with AES key wrap with padding", err)
			}
			return nil, s.blobErr(err)
		}
		defer func() { _ = ctx.DestroyObject(sh, obj) }()
		v, ok, err := s.attr(sh, obj, p11.CKA_VALUE)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("pkcs11 seal: the token does not reveal the unwrapped session key: %w", seal.ErrMisconfigured)
		}
		pt = v
	case mechRSAOAEP, mechRSAOAEPSHA1:
		if err := ctx.DecryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, oaepParams(b.mech))}, k.priv); err != nil {
			return nil, s.initErr("starting RSA-OAEP decryption", err)
		}
		if pt, err = ctx.Decrypt(sh, b.ciphertext); err != nil {
			return nil, s.blobErr(err)
		}
	default:
		return nil, fmt.Errorf("pkcs11 seal: mechanism %s: %w", b.mech, seal.ErrBlob)
	}
	if len(pt) != rootKeySize {
		clear(pt)
		return nil, fmt.Errorf("pkcs11 seal: the wrapped value is not a %d-byte root key: %w", rootKeySize, seal.ErrBlob)
	}
	return pt, nil
}

// initErr classifies a failure to start an operation with the key: the
// key or token not allowing the mechanism is a configuration fault, a lost
// session is passed on for do to re-establish.
func (s *Seal) initErr(step string, err error) error {
	switch {
	case sessionLost(err):
		return fmt.Errorf("pkcs11 seal: %s: %w", step, err)
	case s.mech == mechRSAOAEP && (isCode(err, p11.CKR_ARGUMENTS_BAD) || isCode(err, p11.CKR_MECHANISM_PARAM_INVALID)):
		return fmt.Errorf("pkcs11 seal: %s with key %q: the token refuses RSA-OAEP with SHA-256 and MGF1-SHA-256 (%v); SoftHSM 2.6 and older support only SHA-1: use mechanism %s, or better %s: %w",
			step, s.cfg.KeyLabel, err, MechanismRSAOAEPSHA1, MechanismAESGCM, seal.ErrMisconfigured)
	case isCode(err, p11.CKR_KEY_FUNCTION_NOT_PERMITTED), isCode(err, p11.CKR_KEY_TYPE_INCONSISTENT), isCode(err, p11.CKR_ARGUMENTS_BAD),
		isCode(err, p11.CKR_MECHANISM_INVALID), isCode(err, p11.CKR_MECHANISM_PARAM_INVALID):
		return fmt.Errorf("pkcs11 seal: %s with key %q: the token or key does not allow %s (%v): %w", step, s.cfg.KeyLabel, s.mech, err, seal.ErrMisconfigured)
	}
	return fmt.Errorf("pkcs11 seal: %s with key %q: %w", step, s.cfg.KeyLabel, err)
}

// blobErr classifies a failed decryption: unless the session was lost, the
// ciphertext did not open (tampered, or made by another key). The token's
// code is formatted, not wrapped, so a retry is not attempted.
func (s *Seal) blobErr(err error) error {
	if sessionLost(err) {
		return fmt.Errorf("pkcs11 seal: decrypting with key %q: %w", s.cfg.KeyLabel, err)
	}
	return fmt.Errorf("pkcs11 seal: the token refused to open the wrapped root key with key %q (%v): it was tampered with or wrapped by another key: %w",
		s.cfg.KeyLabel, err, seal.ErrBlob)
}
