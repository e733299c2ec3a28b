package envelope

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferkms/coffer/client"
)

// CofferType is the stanza type of a data key wrapped by the Coffer KMS.
// Its body is a Coffer KMS ciphertext (docs/formats.md), its KeyID and
// KeyVersion those of the Coffer key.
const CofferType = "coffer"

// KMS is the part of the Coffer client (*client.Client) the envelope
// wrappers use.
type KMS interface {
	GenerateDataKey(ctx context.Context, req client.DataKeyRequest) (*client.DataKeyResponse, error)
	Encrypt(ctx context.Context, req client.EncryptRequest) (*client.EncryptResponse, error)
	Decrypt(ctx context.Context, req client.DecryptRequest) (*client.DecryptResponse, error)
}

// Coffer wraps and unwraps data keys with a Coffer server. The file's
// encryption context is bound as the Coffer encryption context, so the
// server refuses to unwrap a key whose header context was changed.
type Coffer struct {
	kms   KMS
	keyID string
}

// NewCoffer returns a Coffer wrapper for keyID (a key id or alias/NAME).
// An Unwrapper needs no keyID (pass ""): each wrapped key names its own.
func NewCoffer(kms KMS, keyID string) *Coffer {
	return &Coffer{kms: kms, keyID: keyID}
}

// GenerateDataKey implements Generator with one GenerateDataKey call.
func (c *Coffer) GenerateDataKey(ctx context.Context, ec map[string]string) ([]byte, []Stanza, error) {
	if c.keyID == "" {
		return nil, nil, errors.New("envelope: Coffer wrapper has no key id")
	}
	resp, err := c.kms.GenerateDataKey(ctx, client.DataKeyRequest{KeyID: c.keyID, Bytes: DataKeySize, Context: ec})
	if err != nil {
		return nil, nil, err
	}
	return resp.Plaintext, []Stanza{{Type: CofferType, KeyID: resp.KeyID, KeyVersion: resp.KeyVersion, Body: resp.Ciphertext}}, nil
}

// Wrap implements Wrapper with one Encrypt call.
func (c *Coffer) Wrap(ctx context.Context, dataKey []byte, ec map[string]string) ([]Stanza, error) {
	if c.keyID == "" {
		return nil, errors.New("envelope: Coffer wrapper has no key id")
	}
	resp, err := c.kms.Encrypt(ctx, client.EncryptRequest{KeyID: c.keyID, Plaintext: dataKey, Context: ec})
	if err != nil {
		return nil, err
	}
	return []Stanza{{Type: CofferType, KeyID: resp.KeyID, KeyVersion: resp.KeyVersion, Body: resp.Ciphertext}}, nil
}

// Unwrap implements Unwrapper: it asks the server to decrypt each
// "coffer" stanza in turn until one succeeds.
func (c *Coffer) Unwrap(ctx context.Context, stanzas []Stanza, ec map[string]string) ([]byte, error) {
	var last error
	for _, s := range stanzas {
		if s.Type != CofferType {
			continue
		}
		resp, err := c.kms.Decrypt(ctx, client.DecryptRequest{Ciphertext: s.Body, Context: ec})
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			last = fmt.Errorf("coffer key %s v%d: %w", s.KeyID, s.KeyVersion, err)
			continue
		}
		return resp.Plaintext, nil
	}
	if last != nil {
		return nil, last
	}
	return nil, fmt.Errorf("no key wrapped by Coffer: %w", ErrNoMatch)
}
