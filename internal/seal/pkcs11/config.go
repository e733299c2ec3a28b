package pkcs11

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cofferkms/coffer/internal/seal"
)

// Mechanism names accepted in Config.Mechanism.
const (
	// MechanismAESGCM encrypts the root key with CKM_AES_GCM under an
	// AES-256 key, a random 12-byte IV chosen by Coffer, a 128-bit tag and
	// additional data binding the blob header. The default.
	MechanismAESGCM = "aes-gcm"
	// MechanismAESKeyWrapPad wraps the root key with CKM_AES_KEY_WRAP_PAD
	// (RFC 5649) through C_WrapKey/C_UnwrapKey of a session object.
	MechanismAESKeyWrapPad = "aes-key-wrap-pad"
	// MechanismRSAOAEP encrypts the root key with CKM_RSA_PKCS_OAEP
	// (SHA-256, MGF1-SHA-256, empty label) under the public key and
	// decrypts with the private key of the same label.
	MechanismRSAOAEP = "rsa-oaep"
	// MechanismRSAOAEPSHA1 is CKM_RSA_PKCS_OAEP with SHA-1 and MGF1-SHA-1,
	// for tokens that support no other OAEP hash (SoftHSM 2.6 and older).
	// OAEP's security does not rest on SHA-1's collision resistance, but
	// prefer aes-gcm, or rsa-oaep where the token supports it.
	MechanismRSAOAEPSHA1 = "rsa-oaep-sha1"
)

// Limits of the configuration: a token label is 32 bytes in PKCS#11
// (CK_TOKEN_INFO.label); the blob stores the key label with a one-byte
// length.
const (
	maxTokenLabel = 32
	maxKeyLabel   = 255
)

// Config selects the PKCS#11 module, token, PIN source and key of the seal.
// The server reads it from YAML, so the json tags are the YAML keys.
type Config struct {
	// Library is the absolute path of the PKCS#11 module (a shared
	// library), e.g. /usr/lib/softhsm/libsofthsm2.so.
	Library string `json:"library"`
	// TokenLabel selects the token by its label. Exactly one of
	// TokenLabel and Slot is set.
	TokenLabel string `json:"token_label"`
	// Slot selects the token by slot ID.
	Slot *uint `json:"slot"`
	// PINFile is a file holding the user PIN, read at each login (trailing
	// newline trimmed). It must not be readable or writable by group or
	// others (mode 0600 or 0400). Exactly one of PINFile and PINEnv is set.
	PINFile string `json:"pin_file"`
	// PINEnv names an environment variable holding the user PIN.
	PINEnv string `json:"pin_env"`
	// KeyLabel is the CKA_LABEL of the key (for rsa-oaep: of both the
	// public and the private key).
	KeyLabel string `json:"key_label"`
	// Mechanism is aes-gcm (the default), aes-key-wrap-pad, rsa-oaep or
	// rsa-oaep-sha1.
	Mechanism string `json:"mechanism"`
	// GenerateKey creates the key (a private, sensitive, non-extractable
	// token object) when no key has KeyLabel: at EnsureKey or at the first
	// Wrap, never at Unwrap.
	GenerateKey bool `json:"generate_key"`
}

// mechanismOf maps a configured mechanism name to the blob's code.
func mechanismOf(name string) (mechanism, bool) {
	switch name {
	case "", MechanismAESGCM:
		return mechAESGCM, true
	case MechanismAESKeyWrapPad:
		return mechAESKWP, true
	case MechanismRSAOAEP:
		return mechRSAOAEP, true
	case MechanismRSAOAEPSHA1:
		return mechRSAOAEPSHA1, true
	}
	return 0, false
}

// Validate checks the configuration alone (no file, library or device is
// touched). Its errors wrap seal.ErrMisconfigured.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("pkcs11 seal: %s: %w", fmt.Sprintf(format, a...), seal.ErrMisconfigured)
	}
	switch {
	case c.Library == "":
		return bad("library is required (the path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so)")
	case !filepath.IsAbs(c.Library):
		// A bare name would be looked up along LD_LIBRARY_PATH and the
		// loader's search path: whoever controls those chooses the code
		// that sees the PIN and the root key.
		return bad("library %q must be an absolute path", c.Library)
	}
	switch {
	case c.TokenLabel == "" && c.Slot == nil:
		return bad("set token_label or slot to choose the token")
	case c.TokenLabel != "" && c.Slot != nil:
		return bad("set only one of token_label and slot")
	case len(c.TokenLabel) > maxTokenLabel:
		return bad("token_label is %d bytes; a PKCS#11 token label has at most %d", len(c.TokenLabel), maxTokenLabel)
	}
	switch {
	case c.PINFile == "" && c.PINEnv == "":
		return bad("set pin_file or pin_env to give the user PIN")
	case c.PINFile != "" && c.PINEnv != "":
		return bad("set only one of pin_file and pin_env")
	case c.PINEnv != "" && strings.ContainsAny(c.PINEnv, "=\x00"):
		return bad("pin_env %q is not an environment variable name", c.PINEnv)
	}
	switch {
	case c.KeyLabel == "":
		return bad("key_label is required")
	case len(c.KeyLabel) > maxKeyLabel:
		return bad("key_label is %d bytes; at most %d", len(c.KeyLabel), maxKeyLabel)
	}
	if _, ok := mechanismOf(c.Mechanism); !ok {
		return bad("mechanism %q is not one of %s, %s, %s, %s", c.Mechanism,
			MechanismAESGCM, MechanismAESKeyWrapPad, MechanismRSAOAEP, MechanismRSAOAEPSHA1)
	}
	return nil
}
