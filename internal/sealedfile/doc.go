// Package sealedfile seals the values of structured text files — YAML,
// JSON, .env files and the data of Kubernetes Secret manifests — in place,
// leaving their keys, structure and comments readable for review and diffs.
//
// Each file has one 256-bit data key, made and wrapped by an
// envelope.Wrapper (the Coffer KMS, through envelope.NewCoffer) and bound
// to the file's encryption context (its name, and for a manifest holding
// one Secret that Secret's namespace and name). Every selected value is
// replaced by a sealed value,
//
//	ENC[coffer:v1,<base64 of nonce || AES-256-GCM ciphertext || tag>]
//
// sealed under a key derived from the data key with HKDF-SHA256, with the
// value's path in the document (and the file's context) as additional
// data, so a value cannot be moved to another key, Secret or file. A
// metadata block stored in the file (a top-level "coffer" object in YAML
// and JSON, a "# coffer:" comment line in a .env file) holds the wrapped
// key, the context, the selection and an HMAC-SHA256 over the sorted list
// of (path, sealed value) pairs, so removing, adding, swapping or altering
// sealed values is detected. docs/formats.md ("Sealed files") documents the
// format.
//
// Seal seals a file (a new one under a new data key; an already sealed one
// under its own data key, sealing only the values added since). Open
// decrypts one in memory: Plaintext gives the document with its values
// restored, Values the decrypted values (for a process environment), and
// Reseal seals an edited plaintext again under the same key, keeping the
// sealed form of the values that did not change.
package sealedfile
