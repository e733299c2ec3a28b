package server_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// TestAWSKMSReEncryptSourceKeyIdMustExist: a SourceKeyId that names no key
// is NotFoundException, as AWS answers, not silently ignored (the
// ciphertext's own key would then be used whatever the caller named).
func TestAWSKMSReEncryptSourceKeyIdMustExist(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"alias/missing", "arn:aws:kms:eu-west-3:123456789012:alias/missing"} {
		if _, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceKeyId: aws.String(src),
			DestinationKeyId: k.KeyMetadata.KeyId}); apiCode(err) != "NotFoundException" {
			t.Errorf("ReEncrypt with SourceKeyId %s: %v, want NotFoundException", src, err)
		}
		if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String(src)}); apiCode(err) != "NotFoundException" {
			t.Errorf("Decrypt with KeyId %s: %v, want NotFoundException", src, err)
		}
	}
	if _, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceKeyId: k.KeyMetadata.Arn,
		DestinationKeyId: k.KeyMetadata.KeyId}); err != nil {
		t.Fatalf("ReEncrypt naming its source key by ARN: %v", err)
	}
}
