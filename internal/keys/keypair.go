package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"runtime"
	"sort"
	"strings"
)

// Data key pairs: an asymmetric key pair made for the caller, whose
// private key is returned encrypted under a key of the service (and, for
// GenerateDataKeyPair, in the clear too), as AWS KMS's GenerateDataKeyPair
// does. The pair is not kept.

// keyPairSpecs are the data key pair specs, by AWS's names.
var keyPairSpecs = map[string]func() (crypto.Signer, error){
	"RSA_2048":      func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	"RSA_3072":      func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 3072) },
	"RSA_4096":      func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 4096) },
	"ECC_NIST_P256": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
	"ECC_NIST_P384": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
	"ECC_NIST_P521": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) },
}

// KeyPairSpecs returns the data key pair specs GenerateDataKeyPair takes,
// sorted.
func KeyPairSpecs() []string {
	out := make([]string, 0, len(keyPairSpecs))
	for s := range keyPairSpecs {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// keyPairSlots bounds the key pair generations running at once: an RSA
// 4096 key takes a core for up to seconds, and callers past the bound wait
// (or give up with their context) rather than take every core.
var keyPairSlots = make(chan struct{}, max(runtime.NumCPU()/2, 1))

// DataKeyPair is a generated key pair: the private key as PKCS #8 DER
// (Private, which the caller must wipe) and encrypted under a key of the
// service (Sealed), the public key as X.509 SubjectPublicKeyInfo DER.
type DataKeyPair struct {
	Private []byte
	Public  []byte
	Sealed  Sealed
}

// GenerateDataKeyPair makes a key pair of spec (KeyPairSpecs) and
// encrypts its private key under the key ref names, binding the
// encryption context ec. The key must be usable before the (costly) pair
// is made.
func (s *Service) GenerateDataKeyPair(ctx context.Context, ref, spec string, ec map[string]string) (DataKeyPair, error) {
	gen, ok := keyPairSpecs[spec]
	if !ok {
		return DataKeyPair{}, fmt.Errorf("%w: key pair spec %q: want one of %s", ErrInvalidArgument, spec, strings.Join(KeyPairSpecs(), ", "))
	}
	h, err := s.resolve(ref)
	if err != nil {
		return DataKeyPair{}, err
	}
	if err := usable(h.cur.Load()); err != nil {
		return DataKeyPair{}, err
	}
	select {
	case keyPairSlots <- struct{}{}:
	case <-ctx.Done():
		return DataKeyPair{}, ctx.Err()
	}
	priv, err := gen()
	<-keyPairSlots
	if err != nil {
		return DataKeyPair{}, fmt.Errorf("generating a %s key pair: %w", spec, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return DataKeyPair{}, fmt.Errorf("encoding the private key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		clear(der)
		return DataKeyPair{}, fmt.Errorf("encoding the public key: %w", err)
	}
	sealed, err := s.seal(ctx, h, der, ec)
	if err != nil {
		clear(der)
		return DataKeyPair{}, err
	}
	return DataKeyPair{Private: der, Public: pub, Sealed: sealed}, nil
}
