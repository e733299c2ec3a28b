package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"
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

// ErrKeyPairBusy refuses a key pair when as many are being made as the
// server allows and as many callers already wait for a turn, or when the
// wait for a turn passed keyPairWait: the caller should retry later.
var ErrKeyPairBusy = errors.New("too many data key pairs are being made at once; retry later")

// pairGate bounds the key pair generations: an RSA 4096 key takes a core
// for up to seconds. At most cap(slots) run at once; at most queue
// callers wait for a slot, each at most wait, and a caller past either
// bound gets ErrKeyPairBusy at once, so a flood of requests is refused
// instead of piling up waiting goroutines and latency without end.
type pairGate struct {
	slots   chan struct{}
	waiting atomic.Int64
	queue   int64
	wait    time.Duration
}

// keyPairWait bounds the wait of a caller for a key pair slot.
const keyPairWait = 5 * time.Second

// newPairGate returns the gate of a process that runs procs threads of Go
// code at once: half of them may make key pairs, and four callers per
// slot may wait.
func newPairGate(procs int) *pairGate {
	n := max(procs/2, 1)
	return &pairGate{slots: make(chan struct{}, n), queue: int64(4 * n), wait: keyPairWait}
}

// keyPairGate is sized by GOMAXPROCS, not NumCPU: in a container with a
// CPU limit GOMAXPROCS follows the limit, while NumCPU counts the whole
// machine's cores (a pod limited to 2 CPUs on a 64-core node would
// otherwise make 32 pairs at once and starve every other request).
var keyPairGate = newPairGate(runtime.GOMAXPROCS(0))

// enter takes a slot, waiting for one if the queue has room, and returns
// the function that gives it back.
func (g *pairGate) enter(ctx context.Context) (func(), error) {
	release := func() { <-g.slots }
	select {
	case g.slots <- struct{}{}:
		return release, nil
	default:
	}
	if g.waiting.Add(1) > g.queue {
		g.waiting.Add(-1)
		return nil, ErrKeyPairBusy
	}
	defer g.waiting.Add(-1)
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, ErrKeyPairBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

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
// is made; past the bounds of keyPairGate it is ErrKeyPairBusy.
func (s *Service) GenerateDataKeyPair(ctx context.Context, ref, spec string, ec map[string]string) (DataKeyPair, error) {
	gen, ok := keyPairSpecs[spec]
	if !ok {
		return DataKeyPair{}, fmt.Errorf("%w: key pair spec %q: want one of %s", ErrInvalidArgument, spec, strings.Join(KeyPairSpecs(), ", "))
	}
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return DataKeyPair{}, err
	}
	if err := usable(h.cur.Load()); err != nil {
		return DataKeyPair{}, err
	}
	release, err := keyPairGate.enter(ctx)
	if err != nil {
		return DataKeyPair{}, err
	}
	priv, err := gen()
	release()
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
