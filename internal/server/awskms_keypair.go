package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
)

// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext: the key
// service makes the pair and encrypts its private key
// (keys.GenerateDataKeyPair); the door only decodes and encodes. They are
// authorized as the data key operations they are a kind of:
// kms:GenerateDataKey (the private key comes back in the clear) and
// kms:GenerateDataKeyWithoutPlaintext, with the request's context.

// awsRecipient is the Nitro Enclaves attestation AWS may take.
type awsRecipient struct {
	KeyEncryptionAlgorithm string
	AttestationDocument    []byte
}

// awsDataKeyPairRequest is the body of both operations.
type awsDataKeyPairRequest struct {
	KeyId             string
	KeyPairSpec       string
	EncryptionContext map[string]string
	GrantTokens       []string
	DryRun            bool
	Recipient         *awsRecipient
}

type awsDataKeyPair struct{ awsDataKeyPairRequest }

func (q *awsDataKeyPair) restForm() any {
	return &client.DataKeyRequest{KeyID: q.KeyId, Context: q.EncryptionContext}
}

// awsDataKeyPairResponse is the answer of both operations
// (PrivateKeyPlaintext empty without plaintext).
type awsDataKeyPairResponse struct {
	PrivateKeyCiphertextBlob []byte
	PrivateKeyPlaintext      []byte `json:",omitempty"`
	PublicKey                []byte
	KeyId                    string
	KeyPairSpec              string
}

// keyPairError is err as the door answers it: too many pairs being made
// (keys.ErrKeyPairBusy) is AWS's ThrottlingException, which the SDKs
// retry after a backoff, not an internal error.
func keyPairError(err error) error {
	if errors.Is(err, keys.ErrKeyPairBusy) {
		return &awsTypedError{typ: "ThrottlingException", status: http.StatusBadRequest,
			err: &apiError{http.StatusTooManyRequests, "key_pairs_busy", keys.ErrKeyPairBusy.Error()}}
	}
	return err
}

// awsKeyPairRoutes registers the two operations.
func (s *Server) awsKeyPairRoutes() {
	d, k := &s.aws, s.sys.Keys
	for _, withPlain := range []bool{true, false} {
		op, action := "GenerateDataKeyPair", "kms:GenerateDataKey"
		if !withPlain {
			op, action = "GenerateDataKeyPairWithoutPlaintext", "kms:GenerateDataKeyWithoutPlaintext"
		}
		awsOp(s, op, action, route{},
			func(_ *http.Request, q *awsDataKeyPair) string { return d.resource(q.KeyId) },
			func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awsDataKeyPair) (awsDataKeyPairResponse, error) {
				ref, err := d.ref(q.KeyId)
				if err != nil {
					return awsDataKeyPairResponse{}, err
				}
				var bad error
				if q.Recipient != nil {
					bad = awsErr("ValidationException", "Coffer has no Nitro Enclaves attestation: Recipient is not supported")
				}
				if q.KeyPairSpec == "" {
					bad = errors.Join(bad, awsErr("ValidationException", "KeyPairSpec is required"))
				}
				if err := errors.Join(bad, dryRun(q.DryRun)); err != nil {
					return awsDataKeyPairResponse{}, err
				}
				kp, err := k.GenerateDataKeyPair(ctx, ref, q.KeyPairSpec, q.EncryptionContext)
				if err != nil {
					return awsDataKeyPairResponse{}, keyPairError(err)
				}
				noteKey(ctx, kp.Sealed.KeyID, kp.Sealed.KeyVersion)
				out := awsDataKeyPairResponse{PrivateKeyCiphertextBlob: kp.Sealed.Ciphertext, PublicKey: kp.Public,
					KeyId: d.cfg.KeyARN(kp.Sealed.KeyID), KeyPairSpec: q.KeyPairSpec}
				if withPlain {
					out.PrivateKeyPlaintext = kp.Private
				} else {
					clear(kp.Private)
				}
				return out, nil
			})
	}
}
