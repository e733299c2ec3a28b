package audit

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// keyFileHeader starts an audit key file; the seed follows in base64.
const keyFileHeader = "coffer-audit-key-v1 "

// Keys are the audit key material of one installation, derived from a
// 32-byte seed kept in a 0600 file beside the log (not under the barrier:
// records of init, unseal and of requests refused while sealed must be
// hashed and signed while the barrier is closed; see docs/audit.md).
type Keys struct {
	hmacKey []byte
	priv    ed25519.PrivateKey
	pub     ed25519.PublicKey
}

// KeysFromSeed derives the HMAC key and the Ed25519 signing key.
func KeysFromSeed(seed []byte) (*Keys, error) {
	if len(seed) != 32 {
		return nil, errors.New("audit key seed must be 32 bytes")
	}
	hk, err := hkdf.Key(sha256.New, seed, nil, "coffer audit hmac v1", 32)
	if err != nil {
		return nil, err
	}
	sk, err := hkdf.Key(sha256.New, seed, nil, "coffer audit ed25519 v1", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(sk)
	return &Keys{hmacKey: hk, priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// LoadOrCreateKeys reads the key file, creating it (0600, fsynced) when it
// does not exist.
func LoadOrCreateKeys(path string) (*Keys, error) {
	k, err := LoadKeys(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return LoadKeys(path)
		}
		return nil, err
	}
	_, err = f.WriteString(keyFileHeader + base64.StdEncoding.EncodeToString(seed) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("writing audit key %s: %w", path, err)
	}
	return KeysFromSeed(seed)
}

// LoadKeys reads an existing key file.
func LoadKeys(path string) (*Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), keyFileHeader)
	if !ok {
		return nil, fmt.Errorf("%s is not a coffer audit key file", path)
	}
	seed, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(seed) != 32 {
		return nil, fmt.Errorf("%s: malformed audit key", path)
	}
	return KeysFromSeed(seed)
}

// HMAC returns hex(HMAC-SHA256(audit key, value)), what records hold in
// place of a sensitive value.
func (k *Keys) HMAC(value string) string {
	m := hmac.New(sha256.New, k.hmacKey)
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// PublicKey is the checkpoint verification key.
func (k *Keys) PublicKey() ed25519.PublicKey { return k.pub }

// PublicKeyString is the public key in base64, as checkpoints carry it and
// `coffer audit pubkey` prints it.
func (k *Keys) PublicKeyString() string { return base64.StdEncoding.EncodeToString(k.pub) }

// ParsePublicKey reads a base64 Ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not a base64 Ed25519 public key (32 bytes)")
	}
	return ed25519.PublicKey(b), nil
}

// checkpointMessage is what a format-1 checkpoint's signature covers: the
// checkpoint's own sequence number, the hash of the line before it (which
// commits to the whole chain) and its time. Trails no longer write it;
// Verify reads it in logs written before format 2.
func checkpointMessage(seq uint64, prev, time string) []byte {
	return fmt.Appendf(nil, "coffer-audit-checkpoint-v1\n%d\n%s\n%s", seq, prev, time)
}

// checkpointMessageV2 is what a format-2 checkpoint's signature covers:
// its sequence number, the hash of the line before it, its time and the
// sequence number of the first line of its file, so removing records from
// the head of the file is detected.
func checkpointMessageV2(seq uint64, prev, time string, fileStart uint64) []byte {
	return fmt.Appendf(nil, "coffer-audit-checkpoint-v2\n%d\n%s\n%s\n%d", seq, prev, time, fileStart)
}

// checkpointMessageV3 is what a format-3 checkpoint's signature covers:
// a format-2 checkpoint's message, plus the replica whose trail it ends,
// so a replica's trail cannot be passed off as another's.
func checkpointMessageV3(replica string, seq uint64, prev, time string, fileStart uint64) []byte {
	return fmt.Appendf(nil, "coffer-audit-checkpoint-v3\n%s\n%d\n%s\n%s\n%d", replica, seq, prev, time, fileStart)
}

// startMessageV3 is what a format-3 start record's signature covers: a
// format-2 start record's message, plus the replica.
func startMessageV3(replica string, seq uint64, prev, time string, fileStart, unverifiedFrom, unverifiedTo uint64) []byte {
	return fmt.Appendf(nil, "coffer-audit-start-v3\n%s\n%d\n%s\n%s\n%d\n%d\n%d", replica, seq, prev, time, fileStart, unverifiedFrom, unverifiedTo)
}

// startMessage is what a start record's signature covers: like a format-2
// checkpoint, plus the range of records the trail found unsigned after
// the last signed line when it opened the log (0 0 when none).
func startMessage(seq uint64, prev, time string, fileStart, unverifiedFrom, unverifiedTo uint64) []byte {
	return fmt.Appendf(nil, "coffer-audit-start-v2\n%d\n%s\n%s\n%d\n%d\n%d", seq, prev, time, fileStart, unverifiedFrom, unverifiedTo)
}
