package server

import (
	"errors"
	"fmt"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/seal/pkcs11"
	"github.com/cofferkms/coffer/internal/seal/tpm"
	"github.com/cofferkms/coffer/internal/seal/transit"
)

// SealConfig is the seal: (and previous_seal:) section of the config: at
// most one auto-unseal; none means Shamir unseal shares (docs/operations.md,
// "Choosing a seal").
type SealConfig struct {
	// PKCS11 wraps the root key with a key in an HSM.
	PKCS11 *pkcs11.Config `json:"pkcs11"`
	// TPM2 seals the root key to this machine's TPM 2.0.
	TPM2 *tpm.Config `json:"tpm2"`
	// Transit wraps the root key with a key in another Coffer.
	Transit *transit.Config `json:"transit"`
}

// open builds the configured seal; nil (Shamir) when c is nil or empty.
// It validates the configuration but needs no device to answer: the
// auto-unseal retries until it does.
func (c *SealConfig) open(section string) (seal.Seal, error) {
	if c == nil {
		return nil, nil
	}
	n := 0
	for _, set := range []bool{c.PKCS11 != nil, c.TPM2 != nil, c.Transit != nil} {
		if set {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	if n > 1 {
		return nil, fmt.Errorf("%s: name one seal (pkcs11, tpm2 or transit), not %d", section, n)
	}
	var s seal.Seal
	var err error
	switch {
	case c.PKCS11 != nil:
		s, err = pkcs11.New(*c.PKCS11)
	case c.TPM2 != nil:
		s, err = tpm.New(*c.TPM2)
	default:
		s, err = transit.New(*c.Transit)
	}
	if err != nil {
		return nil, fmt.Errorf("%s.%s: %w", section, sealName(c), err)
	}
	return s, nil
}

func sealName(c *SealConfig) string {
	switch {
	case c.PKCS11 != nil:
		return "pkcs11"
	case c.TPM2 != nil:
		return "tpm2"
	}
	return "transit"
}

// openSeals builds the seal and the previous seal of cfg.
func openSeals(cfg Config) (cur, prev seal.Seal, err error) {
	if cfg.Seal != nil && cfg.Seal.TPM2 != nil && cfg.Storage.Etcd != nil {
		// One blob in core/root, one TPM: the other replicas could never
		// unwrap it.
		return nil, nil, errors.New("seal.tpm2 seals the root key to one machine's TPM, but replicas on storage.etcd each unseal themselves: use a pkcs11 seal (a shared HSM) or a transit seal for replicas")
	}
	if cur, err = cfg.Seal.open("seal"); err != nil {
		return nil, nil, err
	}
	if prev, err = cfg.PreviousSeal.open("previous_seal"); err != nil {
		if cur != nil {
			cur.Close()
		}
		return nil, nil, err
	}
	if prev != nil && cur != nil && prev.Type() == cur.Type() {
		cur.Close()
		prev.Close()
		return nil, nil, errors.New("previous_seal is of the same type as seal; a migration goes from one seal type to another (to re-wrap under a new key of the same type, migrate through shamir or another type)")
	}
	return cur, prev, nil
}
