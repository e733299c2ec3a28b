package awskms

// The request and response shapes of the operations, as the JSON 1.1
// protocol carries them: field names as AWS spells them, blobs as
// standard base64 (Go's []byte), times as epoch seconds. Fields a client
// may send that Coffer does not use are declared so that the strict
// decoder accepts them; their meaning is in docs/aws-kms.md.

// KeyRequest is the body of operations that take only a key.
type KeyRequest struct {
	KeyId string
}

// EncryptRequest is the body of Encrypt.
type EncryptRequest struct {
	KeyId               string
	Plaintext           []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
	GrantTokens         []string
	DryRun              bool
}

// EncryptResponse is the answer of Encrypt.
type EncryptResponse struct {
	CiphertextBlob      []byte
	KeyId               string
	EncryptionAlgorithm string
}

// DecryptRequest is the body of Decrypt.
type DecryptRequest struct {
	CiphertextBlob      []byte
	KeyId               string
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
	GrantTokens         []string
	DryRun              bool
}

// DecryptResponse is the answer of Decrypt.
type DecryptResponse struct {
	Plaintext           []byte
	KeyId               string
	EncryptionAlgorithm string
}

// GenerateDataKeyRequest is the body of GenerateDataKey and
// GenerateDataKeyWithoutPlaintext.
type GenerateDataKeyRequest struct {
	KeyId             string
	KeySpec           string
	NumberOfBytes     int
	EncryptionContext map[string]string
	GrantTokens       []string
	DryRun            bool
}

// GenerateDataKeyResponse is the answer of GenerateDataKey (Plaintext
// empty for GenerateDataKeyWithoutPlaintext).
type GenerateDataKeyResponse struct {
	CiphertextBlob []byte
	Plaintext      []byte `json:",omitempty"`
	KeyId          string
}

// ReEncryptRequest is the body of ReEncrypt.
type ReEncryptRequest struct {
	CiphertextBlob                 []byte
	SourceKeyId                    string
	SourceEncryptionContext        map[string]string
	SourceEncryptionAlgorithm      string
	DestinationKeyId               string
	DestinationEncryptionContext   map[string]string
	DestinationEncryptionAlgorithm string
	GrantTokens                    []string
	DryRun                         bool
}

// ReEncryptResponse is the answer of ReEncrypt.
type ReEncryptResponse struct {
	CiphertextBlob                 []byte
	SourceKeyId                    string
	KeyId                          string
	SourceEncryptionAlgorithm      string
	DestinationEncryptionAlgorithm string
}

// GenerateRandomRequest is the body of GenerateRandom.
type GenerateRandomRequest struct {
	NumberOfBytes    int
	CustomKeyStoreId string
}

// GenerateRandomResponse is the answer of GenerateRandom.
type GenerateRandomResponse struct {
	Plaintext []byte
}

// Tag is one key tag.
type Tag struct {
	TagKey   string
	TagValue string
}

// CreateKeyRequest is the body of CreateKey.
type CreateKeyRequest struct {
	Description                    string
	KeyUsage                       string
	KeySpec                        string
	CustomerMasterKeySpec          string
	Origin                         string
	MultiRegion                    bool
	Policy                         string
	BypassPolicyLockoutSafetyCheck bool
	Tags                           []Tag
}

// KeyMetadata describes a key.
type KeyMetadata struct {
	AWSAccountId          string
	KeyId                 string
	Arn                   string
	CreationDate          float64
	Enabled               bool
	Description           string
	KeyUsage              string
	KeyState              string
	DeletionDate          float64 `json:",omitempty"`
	Origin                string
	KeyManager            string
	KeySpec               string
	CustomerMasterKeySpec string
	EncryptionAlgorithms  []string
	MultiRegion           bool
}

// KeyMetadataResponse is the answer of CreateKey and DescribeKey.
type KeyMetadataResponse struct {
	KeyMetadata KeyMetadata
}

// DescribeKeyRequest is the body of DescribeKey.
type DescribeKeyRequest struct {
	KeyId       string
	GrantTokens []string
}

// ListRequest is the body of ListKeys and ListAliases (KeyId: only
// ListAliases).
type ListRequest struct {
	KeyId  string `json:",omitempty"`
	Limit  int
	Marker string
}

// KeyListEntry is one key of ListKeys.
type KeyListEntry struct {
	KeyId  string
	KeyArn string
}

// ListKeysResponse is the answer of ListKeys.
type ListKeysResponse struct {
	Keys       []KeyListEntry
	Truncated  bool
	NextMarker string `json:",omitempty"`
}

// AliasListEntry is one alias of ListAliases.
type AliasListEntry struct {
	AliasName   string
	AliasArn    string
	TargetKeyId string
}

// ListAliasesResponse is the answer of ListAliases.
type ListAliasesResponse struct {
	Aliases    []AliasListEntry
	Truncated  bool
	NextMarker string `json:",omitempty"`
}

// ScheduleKeyDeletionRequest is the body of ScheduleKeyDeletion.
type ScheduleKeyDeletionRequest struct {
	KeyId               string
	PendingWindowInDays int
}

// ScheduleKeyDeletionResponse is the answer of ScheduleKeyDeletion.
type ScheduleKeyDeletionResponse struct {
	KeyId               string
	DeletionDate        float64
	KeyState            string
	PendingWindowInDays int
}

// KeyIdResponse is the answer of CancelKeyDeletion (and of
// RotateKeyOnDemand).
type KeyIdResponse struct {
	KeyId string `json:",omitempty"`
}

// AliasRequest is the body of CreateAlias, UpdateAlias and DeleteAlias.
type AliasRequest struct {
	AliasName   string
	TargetKeyId string `json:",omitempty"`
}

// EnableKeyRotationRequest is the body of EnableKeyRotation.
type EnableKeyRotationRequest struct {
	KeyId                string
	RotationPeriodInDays int
}

// KeyRotationStatusResponse is the answer of GetKeyRotationStatus.
type KeyRotationStatusResponse struct {
	KeyRotationEnabled        bool
	KeyId                     string
	RotationPeriodInDays      int     `json:",omitempty"`
	NextRotationDate          float64 `json:",omitempty"`
	OnDemandRotationStartDate float64 `json:",omitempty"`
}

// TagResourceRequest is the body of TagResource.
type TagResourceRequest struct {
	KeyId string
	Tags  []Tag
}

// UntagResourceRequest is the body of UntagResource.
type UntagResourceRequest struct {
	KeyId   string
	TagKeys []string
}

// ListResourceTagsResponse is the answer of ListResourceTags.
type ListResourceTagsResponse struct {
	Tags       []Tag
	Truncated  bool
	NextMarker string `json:",omitempty"`
}

// KeyPolicyRequest is the body of GetKeyPolicy and PutKeyPolicy (Policy:
// only PutKeyPolicy), the policy being a Coffer policy document.
type KeyPolicyRequest struct {
	KeyId                          string
	PolicyName                     string
	Policy                         string `json:",omitempty"`
	BypassPolicyLockoutSafetyCheck bool   `json:",omitempty"`
}

// GetKeyPolicyResponse is the answer of GetKeyPolicy.
type GetKeyPolicyResponse struct {
	Policy     string
	PolicyName string
}
