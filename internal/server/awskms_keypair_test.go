package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// pairMatches reports whether the PKCS #8 private key der is the private
// half of the SubjectPublicKeyInfo pub.
func pairMatches(t *testing.T, der, pub []byte) bool {
	t.Helper()
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("private key: %v", err)
	}
	pk, err := x509.ParsePKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		return p.PublicKey.Equal(pk)
	case *ecdsa.PrivateKey:
		return p.PublicKey.Equal(pk)
	}
	t.Fatalf("private key of type %T", priv)
	return false
}

// TestAWSKMSGenerateDataKeyPair drives both operations with the SDK for
// every spec: the public key parses as SubjectPublicKeyInfo, the private
// key as PKCS #8 of the same pair, and Decrypt opens the encrypted private
// key with the request's context, and not without it.
func TestAWSKMSGenerateDataKeyPair(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	created, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(created.KeyMetadata.KeyId)
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/pairs"), TargetKeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"purpose": "signing"}
	for _, spec := range []types.DataKeyPairSpec{types.DataKeyPairSpecRsa2048, types.DataKeyPairSpecRsa3072, types.DataKeyPairSpecRsa4096,
		types.DataKeyPairSpecEccNistP256, types.DataKeyPairSpecEccNistP384, types.DataKeyPairSpecEccNistP521} {
		out, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: aws.String("alias/pairs"), KeyPairSpec: spec, EncryptionContext: ec})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if aws.ToString(out.KeyId) != e.cfg.KeyARN(id) || out.KeyPairSpec != spec {
			t.Fatalf("%s: key %s spec %s", spec, aws.ToString(out.KeyId), out.KeyPairSpec)
		}
		if !pairMatches(t, out.PrivateKeyPlaintext, out.PublicKey) {
			t.Fatalf("%s: the private key is not the public key's", spec)
		}
		dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.PrivateKeyCiphertextBlob, EncryptionContext: ec})
		if err != nil || !bytes.Equal(dec.Plaintext, out.PrivateKeyPlaintext) {
			t.Fatalf("%s: the encrypted private key opens to other bytes (%v)", spec, err)
		}
		if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.PrivateKeyCiphertextBlob}); apiCode(err) != "InvalidCiphertextException" {
			t.Fatalf("%s: opened without its context: %v", spec, err)
		}

		wo, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: aws.String(id), KeyPairSpec: spec, EncryptionContext: ec})
		if err != nil {
			t.Fatalf("%s without plaintext: %v", spec, err)
		}
		dec, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: wo.PrivateKeyCiphertextBlob, EncryptionContext: ec})
		if err != nil || !pairMatches(t, dec.Plaintext, wo.PublicKey) {
			t.Fatalf("%s without plaintext: the decrypted private key is not the public key's (%v)", spec, err)
		}
	}
	rec, ok := e.rec.last("kms:GenerateDataKeyWithoutPlaintext")
	if !ok || rec.KeyID != id || rec.Door != "aws-kms" || rec.ContextValues["purpose"] != "signing" {
		t.Fatalf("record: %+v", rec)
	}

	for _, c2 := range []struct {
		name string
		in   *kms.GenerateDataKeyPairInput
		want string
	}{
		{"unknown spec", &kms.GenerateDataKeyPairInput{KeyId: aws.String(id), KeyPairSpec: "RSA_1024"}, "ValidationException"},
		{"SM2", &kms.GenerateDataKeyPairInput{KeyId: aws.String(id), KeyPairSpec: types.DataKeyPairSpecSm2}, "ValidationException"},
		{"missing key", &kms.GenerateDataKeyPairInput{KeyId: aws.String("alias/none"), KeyPairSpec: types.DataKeyPairSpecEccNistP256}, "NotFoundException"},
		{"recipient", &kms.GenerateDataKeyPairInput{KeyId: aws.String(id), KeyPairSpec: types.DataKeyPairSpecEccNistP256,
			Recipient: &types.RecipientInfo{AttestationDocument: []byte("doc"), KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}}, "ValidationException"},
		{"dry run", &kms.GenerateDataKeyPairInput{KeyId: aws.String(id), KeyPairSpec: types.DataKeyPairSpecEccNistP256, DryRun: aws.Bool(true)}, "DryRunOperationException"},
	} {
		if _, err := c.GenerateDataKeyPair(ctx, c2.in); apiCode(err) != c2.want {
			t.Errorf("%s: %v, want %s", c2.name, err, c2.want)
		}
	}
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: aws.String(id), KeyPairSpec: types.DataKeyPairSpecEccNistP256}); apiCode(err) != "DisabledException" {
		t.Errorf("disabled key: %v", err)
	}
}

// TestAWSKMSGenerateDataKeyPairAuthorization: the pair with its private
// key in the clear is kms:GenerateDataKey, the pair without it
// kms:GenerateDataKeyWithoutPlaintext, each decided with the request's
// context.
func TestAWSKMSGenerateDataKeyPairAuthorization(t *testing.T) {
	e := newAWSEnv(t)
	admin := e.accessKey("all", allowAll)
	ctx := context.Background()
	created, err := e.kms(admin.ID, admin.SecretAccessKey, "").CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := created.KeyMetadata.KeyId
	ak := e.accessKey("wrapped-only", `statements:
  - effect: allow
    actions: [kms:GenerateDataKeyWithoutPlaintext]
    resources: ["*"]
    conditions:
      StringEquals:
        context.app: ok
`)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ok := map[string]string{"app": "ok"}
	if _, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: id, KeyPairSpec: types.DataKeyPairSpecEccNistP256, EncryptionContext: ok}); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	if _, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: id, KeyPairSpec: types.DataKeyPairSpecEccNistP256, EncryptionContext: ok}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("the pair in the clear with rights to the wrapped one only: %v", err)
	}
	if _, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: id, KeyPairSpec: types.DataKeyPairSpecEccNistP256,
		EncryptionContext: map[string]string{"app": "other"}}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("another context: %v", err)
	}
}
