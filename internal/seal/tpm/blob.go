package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cofferkms/coffer/internal/seal"
	"github.com/google/go-tpm/tpm2"
)

// Blob format, version 1 (docs/formats.md, "TPM 2.0 seal blob"):
//
//	offset  size  field
//	0       1     version = 0x01
//	1       1     primary = 0x01: a transient primary key in the owner
//	              hierarchy from the TCG ECC P-256 SRK template
//	2       4     PCR mask, big-endian; bit i = PCR i of the SHA-256 bank
//	              the object is bound to (0 = not bound); bits 24-31 zero
//	6       2+n   primary name (TPM2B_NAME contents: 0x000B || SHA-256 of
//	              the primary's public area, 34 bytes)
//	        2+n   sealed object's public area (TPMT_PUBLIC, the contents of
//	              a TPM2B_PUBLIC)
//	        2+n   sealed object's private area (TPM2B_PRIVATE contents,
//	              encrypted and integrity-protected by the TPM)
//
// Lengths are big-endian uint16; nothing may follow the last field.
const (
	blobVersion1 = 0x01
	// primaryECCSRK names the primary template: TCG ECC P-256 SRK
	// (tpm2.ECCSRKTemplate, pinned by TestPrimaryTemplatePinned) under
	// TPM_RH_OWNER with an empty owner authorization.
	primaryECCSRK = 0x01

	// nameLen is the size of a SHA-256 TPM name: the algorithm id and the
	// digest.
	nameLen = 2 + 32
	// maxPublic and maxPrivate bound the areas well above what a keyed
	// hash object needs (about 80 and 130 bytes) and below what a TPM
	// accepts.
	maxPublic  = 1024
	maxPrivate = 1024
	// pcrMaskValid is the set of PCRs a blob may name: 0..23.
	pcrMaskValid = 0x00ffffff
)

// blob is a parsed version 1 blob.
type blob struct {
	primary     byte
	pcrMask     uint32
	primaryName []byte
	public      []byte
	private     []byte
}

// marshal encodes b in the version 1 format.
func (b *blob) marshal() []byte {
	out := make([]byte, 0, 6+6+len(b.primaryName)+len(b.public)+len(b.private))
	out = append(out, blobVersion1, b.primary)
	out = binary.BigEndian.AppendUint32(out, b.pcrMask)
	for _, f := range [][]byte{b.primaryName, b.public, b.private} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
		out = append(out, f...)
	}
	return out
}

// blobError wraps seal.ErrBlob with what is wrong with the blob.
func blobError(format string, args ...any) error {
	return fmt.Errorf("TPM seal: %s: %w", fmt.Sprintf(format, args...), seal.ErrBlob)
}

// parseBlob decodes and checks a version 1 blob. Every error wraps
// seal.ErrBlob. It checks the sealed object's public area too, so that a
// blob naming PCRs is always one whose object needs the PCR policy.
func parseBlob(data []byte) (*blob, error) {
	if len(data) < 6 {
		return nil, blobError("blob too short (%d bytes)", len(data))
	}
	if data[0] != blobVersion1 {
		return nil, blobError("unknown blob version %d (this Coffer reads version %d)", data[0], blobVersion1)
	}
	b := &blob{primary: data[1], pcrMask: binary.BigEndian.Uint32(data[2:6])}
	if b.primary != primaryECCSRK {
		return nil, blobError("unknown primary key template %d", b.primary)
	}
	if b.pcrMask&^pcrMaskValid != 0 {
		return nil, blobError("PCR mask %#x names PCRs above 23", b.pcrMask)
	}
	rest := data[6:]
	fields := []*[]byte{&b.primaryName, &b.public, &b.private}
	names := []string{"primary name", "public area", "private area"}
	for i, f := range fields {
		if len(rest) < 2 {
			return nil, blobError("blob truncated before the %s", names[i])
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if len(rest) < n {
			return nil, blobError("blob truncated in the %s", names[i])
		}
		*f = bytes.Clone(rest[:n])
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return nil, blobError("%d bytes after the end of the blob", len(rest))
	}
	if len(b.primaryName) != nameLen || binary.BigEndian.Uint16(b.primaryName) != uint16(tpm2.TPMAlgSHA256) {
		return nil, blobError("primary name is not a SHA-256 name")
	}
	if len(b.public) == 0 || len(b.public) > maxPublic {
		return nil, blobError("public area of %d bytes", len(b.public))
	}
	if len(b.private) == 0 || len(b.private) > maxPrivate {
		return nil, blobError("private area of %d bytes", len(b.private))
	}
	pub, err := unmarshalPublic(b.public)
	if err != nil {
		return nil, blobError("public area does not parse: %v", err)
	}
	if err := checkSealedPublic(pub, b.pcrMask != 0); err != nil {
		return nil, blobError("%v", err)
	}
	return b, nil
}

// unmarshalPublic parses a TPMT_PUBLIC and insists that it is canonical
// (re-marshals to the same bytes), so that what is checked is what the
// TPM gets. go-tpm's reflection-based decoder is not written for hostile
// input, so a panic in it is turned into an error.
func unmarshalPublic(data []byte) (pub *tpm2.TPMTPublic, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, errors.New("malformed public area")
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](data)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(pub), data) {
		return nil, errors.New("public area is not in canonical form")
	}
	return pub, nil
}

// sealedTemplate is the public area of the sealed data object: a keyed
// hash object with no signing scheme, fixed to this TPM and parent, and
// either authorized by an empty password (not bound) or only by the PCR
// policy whose digest is policy.
func sealedTemplate(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:    true,
			FixedParent: true,
			// No dictionary-attack lockout: the object has no secret
			// authorization to guess (empty password or a PCR policy).
			NoDA:         true,
			UserWithAuth: len(policy) == 0,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash,
			&tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{}),
	}
}

// checkSealedPublic checks that pub is a sealed data object as Wrap makes
// it: a bound blob must carry a policy and refuse the empty password, an
// unbound one the reverse.
func checkSealedPublic(pub *tpm2.TPMTPublic, bound bool) error {
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return errors.New("sealed object is not a SHA-256 keyed hash object")
	}
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || a.SensitiveDataOrigin || a.Restricted || a.Decrypt || a.SignEncrypt {
		return errors.New("sealed object has unexpected attributes")
	}
	if bound {
		if a.UserWithAuth || len(pub.AuthPolicy.Buffer) != 32 {
			return errors.New("blob names PCRs but its object does not require the PCR policy")
		}
	} else if !a.UserWithAuth || len(pub.AuthPolicy.Buffer) != 0 {
		return errors.New("blob names no PCRs but its object carries a policy")
	}
	return nil
}
