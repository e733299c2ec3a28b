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

// TestAWSKMSReEncryptAuthorizedBeforeSourceKeyId: ReEncrypt decides both
// halves before it looks at SourceKeyId, as Decrypt decides the
// ciphertext's key before its KeyId: a caller refused the source key learns
// neither whether a name exists nor which key an alias points to
// (NotFoundException, IncorrectKeyException), only AccessDeniedException.
func TestAWSKMSReEncryptAuthorizedBeforeSourceKeyId(t *testing.T) {
	e := newAWSEnv(t)
	admin := e.accessKey("admin", allowAll)
	root := e.kms(admin.ID, admin.SecretAccessKey, "")
	ctx := context.Background()
	app, err := root.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: app.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	other, _ := root.CreateKey(ctx, &kms.CreateKeyInput{})
	otherCT, err := root.Encrypt(ctx, &kms.EncryptInput{KeyId: other.KeyMetadata.KeyId, Plaintext: []byte("o")})
	if err != nil {
		t.Fatal(err)
	}
	re := e.accessKey("reencrypt-app", `statements:
  - effect: allow
    actions: [kms:ReEncrypt, kms:ReEncryptTo]
    resources: [alias/app]
`)
	rc := e.kms(re.ID, re.SecretAccessKey, "")
	for _, src := range []string{"alias/app", "alias/missing", *other.KeyMetadata.KeyId} {
		if _, err := rc.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: otherCT.CiphertextBlob, SourceKeyId: aws.String(src),
			DestinationKeyId: aws.String("alias/app")}); apiCode(err) != "AccessDeniedException" {
			t.Errorf("ReEncrypt from a key not allowed, SourceKeyId %s: %v, want AccessDeniedException", src, err)
		}
	}
}
