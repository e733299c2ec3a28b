package pkcs11

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferkms/coffer/internal/seal"
)

// rsaGenerateBits is the modulus size of a key pair generate_key makes.
const rsaGenerateBits = 3072

// keyIDSize is the size of the random CKA_ID of a generated key.
const keyIDSize = 16

// maxObjects bounds a search: more than one match is already an error.
const maxObjects = 8

// keySet is the token's key for the configured label: an AES key, or an
// RSA key pair (pub only found when wrapping).
type keySet struct {
	key, pub, priv p11.ObjectHandle
	id             []byte
	modulusBytes   int
}

// findKeys finds the configured key and checks that it is usable and
// protected (private, sensitive, not extractable). With generate, a key
// that does not exist is created. forWrap checks the encrypt side too.
func (s *Seal) findKeys(sh p11.SessionHandle, generate, forWrap bool) (*keySet, error) {
	k, found, err := s.lookupKeys(sh, forWrap)
	if err != nil {
		return nil, err
	}
	if !found {
		if !generate {
			return nil, fmt.Errorf("pkcs11 seal: %s has no %s key labelled %q (create it in a key ceremony, or set generate_key to let Coffer create it at init): %w",
				s.tokenName(), s.keyKind(), s.cfg.KeyLabel, seal.ErrMisconfigured)
		}
		if err := s.generate(); err != nil {
			return nil, err
		}
		k, found, err = s.lookupKeys(sh, forWrap)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("pkcs11 seal: %s does not show the key labelled %q it just generated: %w", s.tokenName(), s.cfg.KeyLabel, seal.ErrMisconfigured)
		}
	}
	return k, nil
}

// keyKind names the kind of key the mechanism needs, for messages.
func (s *Seal) keyKind() string {
	if s.mech.isRSA() {
		return "RSA"
	}
	return "AES"
}

// lookupKeys finds and checks the key; found is false when no object has
// the label (for RSA: neither half). With forWrap, the encrypt side (and
// for RSA the public key) is required too.
func (s *Seal) lookupKeys(sh p11.SessionHandle, forWrap bool) (*keySet, bool, error) {
	if err := s.checkLoggedIn(sh); err != nil {
		return nil, false, err
	}
	if !s.mech.isRSA() {
		keys, err := s.findObjects(sh, p11.CKO_SECRET_KEY, p11.CKK_AES)
		if err != nil || len(keys) == 0 {
			return nil, false, err
		}
		if len(keys) > 1 {
			return nil, false, s.ambiguous(len(keys), "AES keys")
		}
		k := &keySet{key: keys[0]}
		if k.id, err = s.checkSecret(sh, keys[0], forWrap); err != nil {
			return nil, false, err
		}
		return k, true, nil
	}
	privs, err := s.findObjects(sh, p11.CKO_PRIVATE_KEY, p11.CKK_RSA)
	if err != nil {
		return nil, false, err
	}
	var pubs []p11.ObjectHandle
	if forWrap || len(privs) == 0 {
		if pubs, err = s.findObjects(sh, p11.CKO_PUBLIC_KEY, p11.CKK_RSA); err != nil {
			return nil, false, err
		}
	}
	switch {
	case len(privs) == 0 && len(pubs) == 0:
		return nil, false, nil
	case len(privs) > 1:
		return nil, false, s.ambiguous(len(privs), "RSA private keys")
	case len(pubs) > 1:
		return nil, false, s.ambiguous(len(pubs), "RSA public keys")
	case len(privs) == 0:
		return nil, false, fmt.Errorf("pkcs11 seal: %s has an RSA public key labelled %q but no private key of that label (or the PIN's user cannot see it): %w",
			s.tokenName(), s.cfg.KeyLabel, seal.ErrMisconfigured)
	case forWrap && len(pubs) == 0:
		return nil, false, fmt.Errorf("pkcs11 seal: %s has an RSA private key labelled %q but no public key of that label to wrap with: %w",
			s.tokenName(), s.cfg.KeyLabel, seal.ErrMisconfigured)
	}
	k := &keySet{priv: privs[0]}
	if k.id, err = s.checkPrivate(sh, privs[0]); err != nil {
		return nil, false, err
	}
	if forWrap {
		k.pub = pubs[0]
		pubID, n, err := s.checkPublic(sh, pubs[0])
		if err != nil {
			return nil, false, err
		}
		if string(pubID) != string(k.id) {
			return nil, false, fmt.Errorf("pkcs11 seal: the RSA public and private keys labelled %q have different CKA_IDs (%x, %x); they are probably not a pair: %w",
				s.cfg.KeyLabel, pubID, k.id, seal.ErrMisconfigured)
		}
		k.modulusBytes = n
	}
	return k, true, nil
}

// checkLoggedIn fails with CKR_USER_NOT_LOGGED_IN (so that do logs in
// again) when the token logged the session out: a logged-out session sees
// no private object, which must not read as a missing key (nor make
// generate_key create a second one).
func (s *Seal) checkLoggedIn(sh p11.SessionHandle) error {
	info, err := s.mod.ctx.GetSessionInfo(sh)
	if err != nil {
		return fmt.Errorf("pkcs11 seal: reading the session state: %w", err)
	}
	if info.State != p11.CKS_RO_USER_FUNCTIONS && info.State != p11.CKS_RW_USER_FUNCTIONS {
		return fmt.Errorf("pkcs11 seal: the token logged the session out: %w", p11.Error(p11.CKR_USER_NOT_LOGGED_IN))
	}
	return nil
}

func (s *Seal) ambiguous(n int, what string) error {
	return fmt.Errorf("pkcs11 seal: %s has %d %s labelled %q; the label must name one key: %w",
		s.tokenName(), n, what, s.cfg.KeyLabel, seal.ErrMisconfigured)
}

// findObjects lists the objects of a class and key type with the label.
func (s *Seal) findObjects(sh p11.SessionHandle, class, keyType uint) ([]p11.ObjectHandle, error) {
	ctx := s.mod.ctx
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_KEY_TYPE, keyType),
		p11.NewAttribute(p11.CKA_LABEL, s.cfg.KeyLabel),
	}
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, fmt.Errorf("pkcs11 seal: searching for key %q: %w", s.cfg.KeyLabel, err)
	}
	objs, _, err := ctx.FindObjects(sh, maxObjects)
	ferr := ctx.FindObjectsFinal(sh)
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11 seal: searching for key %q: %w", s.cfg.KeyLabel, err)
	}
	return objs, nil
}

// attr reads one attribute; ok is false when the token does not have it
// for this object (a token rejects the whole request for one unknown
// attribute, so they are read one by one).
func (s *Seal) attr(sh p11.SessionHandle, o p11.ObjectHandle, typ uint) (value []byte, ok bool, err error) {
	a, err := s.mod.ctx.GetAttributeValue(sh, o, []*p11.Attribute{p11.NewAttribute(typ, nil)})
	switch {
	case isCode(err, p11.CKR_ATTRIBUTE_TYPE_INVALID), isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("pkcs11 seal: reading the attributes of key %q: %w", s.cfg.KeyLabel, err)
	}
	return a[0].Value, true, nil
}

// flag reads a CK_BBOOL attribute; an attribute the token lacks is false.
func (s *Seal) flag(sh p11.SessionHandle, o p11.ObjectHandle, typ uint) (bool, error) {
	v, ok, err := s.attr(sh, o, typ)
	return ok && len(v) == 1 && v[0] != 0, err
}

// ulong decodes a CK_ULONG attribute (native byte order and size).
func ulong(v []byte) (uint64, bool) {
	switch len(v) {
	case 8:
		return binary.NativeEndian.Uint64(v), true
	case 4:
		return uint64(binary.NativeEndian.Uint32(v)), true
	}
	return 0, false
}

// flags reads several CK_BBOOL attributes.
func (s *Seal) flags(sh p11.SessionHandle, o p11.ObjectHandle, types ...uint) (map[uint]bool, error) {
	out := make(map[uint]bool, len(types))
	for _, t := range types {
		v, err := s.flag(sh, o, t)
		if err != nil {
			return nil, err
		}
		out[t] = v
	}
	return out, nil
}

// checkProtected refuses a key whose secret is not confined to the token:
// CKA_PRIVATE false lets any process that opens the token use it without
// the PIN; CKA_SENSITIVE false lets anyone with the PIN read it;
// CKA_EXTRACTABLE true lets anyone with the PIN wrap it out under a key of
// their choice, unless only trusted keys may wrap it.
func (s *Seal) checkProtected(f map[uint]bool, kind string) error {
	bad := func(why, fix string) error {
		return fmt.Errorf("pkcs11 seal: the %s labelled %q %s; %s: %w", kind, s.cfg.KeyLabel, why, fix, seal.ErrMisconfigured)
	}
	switch {
	case !f[p11.CKA_PRIVATE]:
		return bad("is not private (CKA_PRIVATE false): any process that can open the token uses it without the PIN",
			"create it with CKA_PRIVATE true (pkcs11-tool --private)")
	case !f[p11.CKA_SENSITIVE]:
		return bad("is not sensitive (CKA_SENSITIVE false): anyone with the PIN can read its value",
			"create it with CKA_SENSITIVE true (pkcs11-tool --sensitive)")
	case f[p11.CKA_EXTRACTABLE] && !f[p11.CKA_WRAP_WITH_TRUSTED]:
		return bad("is extractable (CKA_EXTRACTABLE true) by any wrapping key: anyone with the PIN can export it",
			"create it non-extractable, or set CKA_WRAP_WITH_TRUSTED for backups under trusted keys only")
	}
	return nil
}

// checkSecret checks an AES key and returns its CKA_ID.
func (s *Seal) checkSecret(sh p11.SessionHandle, o p11.ObjectHandle, forWrap bool) ([]byte, error) {
	f, err := s.flags(sh, o, p11.CKA_PRIVATE, p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE, p11.CKA_WRAP_WITH_TRUSTED,
		p11.CKA_ENCRYPT, p11.CKA_DECRYPT, p11.CKA_WRAP, p11.CKA_UNWRAP)
	if err != nil {
		return nil, err
	}
	if err := s.checkProtected(f, "AES key"); err != nil {
		return nil, err
	}
	need := []struct {
		attr uint
		name string
		wrap bool // needed only to wrap
	}{{p11.CKA_DECRYPT, "CKA_DECRYPT", false}, {p11.CKA_ENCRYPT, "CKA_ENCRYPT", true}}
	if s.mech == mechAESKWP {
		need = []struct {
			attr uint
			name string
			wrap bool
		}{{p11.CKA_UNWRAP, "CKA_UNWRAP", false}, {p11.CKA_WRAP, "CKA_WRAP", true}}
	}
	for _, n := range need {
		if (forWrap || !n.wrap) && !f[n.attr] {
			return nil, fmt.Errorf("pkcs11 seal: the AES key labelled %q does not allow %s (%s false): %w", s.cfg.KeyLabel, s.mech, n.name, seal.ErrMisconfigured)
		}
	}
	if v, ok, err := s.attr(sh, o, p11.CKA_VALUE_LEN); err != nil {
		return nil, err
	} else if n, isLen := ulong(v); ok && isLen && n != 32 {
		return nil, fmt.Errorf("pkcs11 seal: the AES key labelled %q is %d bits; the root key is wrapped only with AES-256: %w", s.cfg.KeyLabel, n*8, seal.ErrMisconfigured)
	}
	id, _, err := s.attr(sh, o, p11.CKA_ID)
	if len(id) > maxKeyID {
		return nil, fmt.Errorf("pkcs11 seal: the CKA_ID of key %q is %d bytes; at most %d: %w", s.cfg.KeyLabel, len(id), maxKeyID, seal.ErrMisconfigured)
	}
	return id, err
}

// checkPrivate checks an RSA private key and returns its CKA_ID.
func (s *Seal) checkPrivate(sh p11.SessionHandle, o p11.ObjectHandle) ([]byte, error) {
	f, err := s.flags(sh, o, p11.CKA_PRIVATE, p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE, p11.CKA_WRAP_WITH_TRUSTED,
		p11.CKA_DECRYPT, p11.CKA_ALWAYS_AUTHENTICATE)
	if err != nil {
		return nil, err
	}
	if err := s.checkProtected(f, "RSA private key"); err != nil {
		return nil, err
	}
	switch {
	case !f[p11.CKA_DECRYPT]:
		return nil, fmt.Errorf("pkcs11 seal: the RSA private key labelled %q does not allow decryption (CKA_DECRYPT false): %w", s.cfg.KeyLabel, seal.ErrMisconfigured)
	case f[p11.CKA_ALWAYS_AUTHENTICATE]:
		return nil, fmt.Errorf("pkcs11 seal: the RSA private key labelled %q needs a PIN at every use (CKA_ALWAYS_AUTHENTICATE), which an unattended unseal cannot give: %w", s.cfg.KeyLabel, seal.ErrMisconfigured)
	}
	id, _, err := s.attr(sh, o, p11.CKA_ID)
	if len(id) > maxKeyID {
		return nil, fmt.Errorf("pkcs11 seal: the CKA_ID of key %q is %d bytes; at most %d: %w", s.cfg.KeyLabel, len(id), maxKeyID, seal.ErrMisconfigured)
	}
	return id, err
}

// checkPublic checks an RSA public key and returns its CKA_ID and modulus
// size in bytes.
func (s *Seal) checkPublic(sh p11.SessionHandle, o p11.ObjectHandle) ([]byte, int, error) {
	enc, err := s.flag(sh, o, p11.CKA_ENCRYPT)
	if err != nil {
		return nil, 0, err
	}
	if !enc {
		return nil, 0, fmt.Errorf("pkcs11 seal: the RSA public key labelled %q does not allow encryption (CKA_ENCRYPT false): %w", s.cfg.KeyLabel, seal.ErrMisconfigured)
	}
	mod, _, err := s.attr(sh, o, p11.CKA_MODULUS)
	if err != nil {
		return nil, 0, err
	}
	for len(mod) > 0 && mod[0] == 0 {
		mod = mod[1:]
	}
	if len(mod) < minRSABytes || len(mod) > maxRSABytes {
		return nil, 0, fmt.Errorf("pkcs11 seal: the RSA key labelled %q has a %d-bit modulus; use 2048 to 8192 bits (3072 or more recommended): %w",
			s.cfg.KeyLabel, len(mod)*8, seal.ErrMisconfigured)
	}
	id, _, err := s.attr(sh, o, p11.CKA_ID)
	return id, len(mod), err
}

// generate creates the configured key as token objects in a read-write
// session: private, sensitive, never extractable, allowed only what the
// mechanism needs, with a random CKA_ID that blobs record.
func (s *Seal) generate() error {
	ctx := s.mod.ctx
	rw, err := ctx.OpenSession(s.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("pkcs11 seal: opening a read-write session to generate key %q: %w", s.cfg.KeyLabel, err)
	}
	defer func() { _ = ctx.CloseSession(rw) }()
	id := make([]byte, keyIDSize)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("pkcs11 seal: random: %w", err)
	}
	common := func(extra ...*p11.Attribute) []*p11.Attribute {
		return append([]*p11.Attribute{
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_LABEL, s.cfg.KeyLabel),
			p11.NewAttribute(p11.CKA_ID, id),
		}, extra...)
	}
	secret := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
	}
	switch s.mech {
	case mechRSAOAEP, mechRSAOAEPSHA1:
		pub := common(
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS_BITS, rsaGenerateBits),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_VERIFY, false),
			p11.NewAttribute(p11.CKA_WRAP, false),
		)
		priv := common(append(secret,
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_SIGN, false),
			p11.NewAttribute(p11.CKA_UNWRAP, false),
			p11.NewAttribute(p11.CKA_DERIVE, false),
		)...)
		_, _, err = ctx.GenerateKeyPair(rw, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pub, priv)
	default:
		kwp := s.mech == mechAESKWP
		tmpl := common(append(secret,
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_ENCRYPT, !kwp),
			p11.NewAttribute(p11.CKA_DECRYPT, !kwp),
			p11.NewAttribute(p11.CKA_WRAP, kwp),
			p11.NewAttribute(p11.CKA_UNWRAP, kwp),
			p11.NewAttribute(p11.CKA_SIGN, false),
			p11.NewAttribute(p11.CKA_VERIFY, false),
			p11.NewAttribute(p11.CKA_DERIVE, false),
		)...)
		_, err = ctx.GenerateKey(rw, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
	}
	if err != nil {
		return fmt.Errorf("pkcs11 seal: generating the %s key %q on %s: %w", s.keyKind(), s.cfg.KeyLabel, s.tokenName(), err)
	}
	return nil
}
