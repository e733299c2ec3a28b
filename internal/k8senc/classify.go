// Package k8senc inspects and migrates Kubernetes encryption at rest.
//
// Status (behind `coffer k8s encryption-status`) reads the apiserver's etcd
// directly, read-only, and classifies every stored value by its prefix:
// plaintext (the identity provider: "k8s\x00" protobuf, JSON or CBOR),
// "k8s:enc:kms:v2:<name>:" (whose EncryptedObject carries the key_id),
// "k8s:enc:kms:v1:<name>:", "k8s:enc:aescbc:v1:<key>:",
// "k8s:enc:aesgcm:v1:<key>:" and "k8s:enc:secretbox:v1:<key>:". It groups
// them by resource, provider and key_id and says which groups are stale.
//
// Migrate (behind `coffer k8s migrate`) rewrites stale objects through the
// Kubernetes API with a no-op update: the apiserver re-encrypts an object on
// write when it was read with a provider or key_id other than its current
// write provider, and skips the write otherwise.
package k8senc

import (
	"bytes"
	"strings"

	"google.golang.org/protobuf/proto"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

// Types of stored values.
const (
	TypeIdentity  = "identity"
	TypeKMS       = "kms"
	TypeAESCBC    = "aescbc"
	TypeAESGCM    = "aesgcm"
	TypeSecretbox = "secretbox"
	TypeUnknown   = "unknown"
)

// Value is the classification of one stored etcd value.
type Value struct {
	// Type is one of the Type constants.
	Type string
	// Version is the envelope version of encrypted values ("v1", "v2").
	Version string
	// Name is the provider name of kms values, or the key name of aescbc,
	// aesgcm and secretbox values (the name in the EncryptionConfiguration).
	Name string
	// KeyID is the KMS v2 key_id from the EncryptedObject.
	KeyID string
	// Encoding is the serialization of plaintext values: protobuf, json or
	// cbor.
	Encoding string
	// Invalid is set when a kms v2 value's EncryptedObject does not parse.
	Invalid string
}

// Plaintext reports whether the value is stored unencrypted.
func (v Value) Plaintext() bool { return v.Type == TypeIdentity }

// Provider names the provider as in the status table: "identity",
// "kms:v2:coffer", "aescbc:v1:key1", ... or "unknown".
func (v Value) Provider() string {
	switch v.Type {
	case TypeIdentity, TypeUnknown:
		return v.Type
	}
	return v.Type + ":" + v.Version + ":" + v.Name
}

// The serializations of unencrypted objects.
var (
	protobufMagic = []byte("k8s\x00")
	cborMagic     = []byte{0xd9, 0xd9, 0xf7} // self-described CBOR tag
	encPrefix     = []byte("k8s:enc:")
)

// Classify says how one etcd value is stored. It never decrypts anything.
func Classify(data []byte) Value {
	switch {
	case bytes.HasPrefix(data, protobufMagic):
		return Value{Type: TypeIdentity, Encoding: "protobuf"}
	case bytes.HasPrefix(data, cborMagic):
		return Value{Type: TypeIdentity, Encoding: "cbor"}
	case len(bytes.TrimLeft(data, " \t\r\n")) > 0 && bytes.TrimLeft(data, " \t\r\n")[0] == '{':
		return Value{Type: TypeIdentity, Encoding: "json"}
	case !bytes.HasPrefix(data, encPrefix):
		return Value{Type: TypeUnknown}
	}
	// k8s:enc:<type>:<version>:<name>:<payload>
	rest := data[len(encPrefix):]
	var fields [3]string
	for i := range fields {
		j := bytes.IndexByte(rest, ':')
		if j < 0 {
			return Value{Type: TypeUnknown}
		}
		fields[i] = string(rest[:j])
		rest = rest[j+1:]
	}
	typ, version, name := fields[0], fields[1], fields[2]
	v := Value{Type: typ, Version: version, Name: name}
	switch typ {
	case TypeKMS:
		if version == "v2" {
			var eo kmstypes.EncryptedObject
			if err := proto.Unmarshal(rest, &eo); err != nil {
				v.Invalid = "EncryptedObject: " + err.Error()
			} else if eo.KeyID == "" {
				v.Invalid = "EncryptedObject without a key_id"
			}
			v.KeyID = eo.KeyID
		}
	case TypeAESCBC, TypeAESGCM, TypeSecretbox:
	default:
		return Value{Type: TypeUnknown}
	}
	return v
}

// ResourceOf returns the resource an etcd key under prefix (normally
// "/registry/") belongs to: "secrets" for /registry/secrets/ns/name,
// "apiservices.apiregistration.k8s.io" for
// /registry/apiregistration.k8s.io/apiservices/name (the group's path
// layout of custom resources and aggregated groups). It returns "" for keys
// outside prefix.
func ResourceOf(prefix, key string) string {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 || parts[0] == "" {
		return ""
	}
	first := parts[0]
	if strings.Contains(first, ".") && len(parts) >= 3 {
		return parts[1] + "." + first
	}
	if first == "services" && len(parts) >= 3 {
		switch parts[1] {
		case "endpoints":
			return "endpoints"
		case "specs":
			return "services"
		}
	}
	return first
}
