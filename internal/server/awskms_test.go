package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/server/awskms"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// awsEnv is a Coffer server over HTTPS on loopback, driven through the AWS
// SDK's own KMS client and signer.
type awsEnv struct {
	t    testing.TB
	ts   *httptest.Server
	root string
	rec  *memRecorder
	cfg  awskms.Config
}

func newAWSEnv(t testing.TB) *awsEnv {
	t.Helper()
	e := &awsEnv{t: t, rec: &memRecorder{}, cfg: awskms.Config{Partition: "aws", Region: "eu-west-3", Account: "123456789012"}}
	s := sys.New(barrier.New(inmem.New()), time.Now)
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: e.rec,
		AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000}), AWSKMS: e.cfg})
	e.ts = httptest.NewTLSServer(api)
	t.Cleanup(e.ts.Close)
	var ir client.InitResponse
	e.rest("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.rest("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken
	return e
}

// rest calls Coffer's own API.
func (e *awsEnv) rest(method, path, token string, in, out any) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.ts.URL+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		e.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// accessKey makes an access key holding a policy with document doc.
func (e *awsEnv) accessKey(name, doc string) client.CreateAccessKeyResponse {
	e.t.Helper()
	e.rest("PUT", "/v1/policies/"+name, e.root, client.PutPolicyRequest{Document: doc}, nil)
	var ak client.CreateAccessKeyResponse
	e.rest("POST", "/v1/access-keys", e.root, client.CreateAccessKeyRequest{Policies: []string{name}}, &ak)
	return ak
}

// kms is the SDK's KMS client signing with id and secret (and token, when
// not empty), against the test server, without retries. It is built from
// options alone, not config.LoadDefaultConfig, so that no AWS_* variable
// or ~/.aws file of the machine running the tests takes part.
func (e *awsEnv) kms(id, secret, token string) *kms.Client {
	e.t.Helper()
	return kms.New(kms.Options{Region: e.cfg.Region, BaseEndpoint: aws.String(e.ts.URL), HTTPClient: e.ts.Client(),
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, token), Retryer: aws.NopRetryer{}})
}

const allowAll = `statements:
  - effect: allow
    actions: ["kms:*", "key:*"]
    resources: ["*"]
`

// apiCode is the AWS error code of err ("" when it is no API error).
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestAWSKMSOperations drives every operation of the door with the stock
// SDK client: round trips, key references (id, ARN, alias, alias ARN) and
// the AWS error types the SDK maps to its typed errors.
func TestAWSKMSOperations(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()

	created, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("orders"),
		Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("a")}}})
	if err != nil {
		t.Fatal(err)
	}
	md := created.KeyMetadata
	id := aws.ToString(md.KeyId)
	arn := "arn:aws:kms:eu-west-3:123456789012:key/" + id
	if aws.ToString(md.Arn) != arn || md.KeyState != types.KeyStateEnabled || !md.Enabled || aws.ToString(md.Description) != "orders" ||
		md.KeySpec != types.KeySpecSymmetricDefault || aws.ToString(md.AWSAccountId) != "123456789012" || md.CreationDate == nil {
		t.Fatalf("CreateKey metadata: %+v", md)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/orders"), TargetKeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}

	// Encrypt under each kind of reference; Decrypt with and without KeyId.
	ec := map[string]string{"tenant": "t1"}
	for _, ref := range []string{id, arn, "alias/orders", "arn:aws:kms:eu-west-3:123456789012:alias/orders"} {
		enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(ref), Plaintext: []byte("hello " + ref), EncryptionContext: ec})
		if err != nil {
			t.Fatalf("Encrypt %s: %v", ref, err)
		}
		if aws.ToString(enc.KeyId) != arn || enc.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
			t.Fatalf("Encrypt %s answer: %s %s", ref, aws.ToString(enc.KeyId), enc.EncryptionAlgorithm)
		}
		for _, keyID := range []*string{nil, aws.String(ref)} {
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: keyID})
			if err != nil || string(dec.Plaintext) != "hello "+ref || aws.ToString(dec.KeyId) != arn {
				t.Fatalf("Decrypt %s (KeyId %v): %v %+v", ref, keyID != nil, err, dec)
			}
		}
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/orders"), Plaintext: []byte("secret"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	// The ciphertext is Coffer's own: the REST API opens it.
	var restDec client.DecryptResponse
	e.rest("POST", "/v1/kms/decrypt", e.root, client.DecryptRequest{Ciphertext: enc.CiphertextBlob, Context: ec}, &restDec)
	if string(restDec.Plaintext) != "secret" {
		t.Fatalf("REST decrypt of an AWS door ciphertext: %q", restDec.Plaintext)
	}
	// Wrong context, altered ciphertext, another key named.
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"tenant": "t2"}}); !errors.As(err, new(*types.InvalidCiphertextException)) {
		t.Fatalf("Decrypt with another context: %v", err)
	}
	other, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	otherID := aws.ToString(other.KeyMetadata.KeyId)
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: aws.String(otherID)}); !errors.As(err, new(*types.IncorrectKeyException)) {
		t.Fatalf("Decrypt naming another key: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/none"), Plaintext: []byte("x")}); !errors.As(err, new(*types.NotFoundException)) {
		t.Fatalf("Encrypt under a missing alias: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("arn:aws:kms:us-east-1:999999999999:key/" + id), Plaintext: []byte("x")}); !errors.As(err, new(*types.NotFoundException)) {
		t.Fatalf("Encrypt under an ARN of another account: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x"), DryRun: aws.Bool(true)}); !errors.As(err, new(*types.DryRunOperationException)) {
		t.Fatalf("Encrypt dry run: %v", err)
	}

	// Data keys.
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/orders"), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	if err != nil || len(dk.Plaintext) != 32 || aws.ToString(dk.KeyId) != arn {
		t.Fatalf("GenerateDataKey: %v %+v", err, dk)
	}
	if opened, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec}); err != nil || !bytes.Equal(opened.Plaintext, dk.Plaintext) {
		t.Fatalf("Decrypt of a data key: %v", err)
	}
	dk16, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(id), NumberOfBytes: aws.Int32(16)})
	if err != nil || len(dk16.Plaintext) != 16 {
		t.Fatalf("GenerateDataKey 16 bytes: %v", err)
	}
	if _, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(id)}); apiCode(err) != "ValidationException" {
		t.Fatalf("GenerateDataKey without a size: %v", err)
	}
	wo, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(id), KeySpec: types.DataKeySpecAes128})
	if err != nil || len(wo.CiphertextBlob) == 0 {
		t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	if opened, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: wo.CiphertextBlob}); err != nil || len(opened.Plaintext) != 16 {
		t.Fatalf("Decrypt of a data key without plaintext: %v", err)
	}
	// The SDK's output has no Plaintext field: the wire must not carry one.
	ak2 := e.accessKey("all2", allowAll)
	woBody := `{"KeyId":"` + id + `","NumberOfBytes":32}`
	if st, raw := e.rawBody("GenerateDataKeyWithoutPlaintext", ak2.ID, ak2.SecretAccessKey, woBody); st != 200 || strings.Contains(raw, "Plaintext") || !strings.Contains(raw, "CiphertextBlob") {
		t.Fatalf("GenerateDataKeyWithoutPlaintext on the wire: %d %s", st, raw)
	}

	// ReEncrypt to the other key, with a destination context.
	re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: aws.String(otherID), DestinationEncryptionContext: map[string]string{"moved": "yes"}})
	if err != nil || aws.ToString(re.SourceKeyId) != arn || !strings.HasSuffix(aws.ToString(re.KeyId), otherID) {
		t.Fatalf("ReEncrypt: %v %+v", err, re)
	}
	if opened, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"moved": "yes"}}); err != nil || string(opened.Plaintext) != "secret" {
		t.Fatalf("Decrypt after ReEncrypt: %v", err)
	}
	// No destination context: AWS's empty one, not the source's.
	re2, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec, DestinationKeyId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re2.CiphertextBlob}); err != nil {
		t.Fatalf("a ReEncrypt without destination context is opened without context: %v", err)
	}
	if _, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		SourceKeyId: aws.String(otherID), DestinationKeyId: aws.String(id)}); !errors.As(err, new(*types.IncorrectKeyException)) {
		t.Fatalf("ReEncrypt naming another source key: %v", err)
	}

	// Random.
	rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(24)})
	if err != nil || len(rnd.Plaintext) != 24 {
		t.Fatalf("GenerateRandom: %v", err)
	}
	if _, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(5000)}); apiCode(err) != "ValidationException" {
		t.Fatalf("GenerateRandom 5000: %v", err)
	}

	// Describe and list.
	desc, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/orders")})
	if err != nil || aws.ToString(desc.KeyMetadata.KeyId) != id {
		t.Fatalf("DescribeKey: %v", err)
	}
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/none")}); !errors.As(err, new(*types.NotFoundException)) {
		t.Fatalf("DescribeKey of a missing alias: %v", err)
	}
	var listed []string
	for p := kms.NewListKeysPaginator(c, &kms.ListKeysInput{Limit: aws.Int32(1)}); p.HasMorePages(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Keys {
			listed = append(listed, aws.ToString(k.KeyId))
		}
	}
	if len(listed) != 2 || !(listed[0] == id || listed[1] == id) {
		t.Fatalf("ListKeys pages: %v", listed)
	}
	aliases, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(arn)})
	if err != nil || len(aliases.Aliases) != 1 || aws.ToString(aliases.Aliases[0].AliasName) != "alias/orders" ||
		aws.ToString(aliases.Aliases[0].TargetKeyId) != id || aws.ToString(aliases.Aliases[0].AliasArn) != "arn:aws:kms:eu-west-3:123456789012:alias/orders" {
		t.Fatalf("ListAliases: %v %+v", err, aliases)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/orders"), TargetKeyId: aws.String(otherID)}); !errors.As(err, new(*types.AlreadyExistsException)) {
		t.Fatalf("CreateAlias of an existing alias: %v", err)
	}
	if _, err := c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/orders")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/orders")}); !errors.As(err, new(*types.NotFoundException)) {
		t.Fatalf("DescribeKey of a deleted alias: %v", err)
	}

	// Rotation.
	if st, err := c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(id)}); err != nil || st.KeyRotationEnabled {
		t.Fatalf("rotation status of a new key: %v %+v", err, st)
	}
	if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(id), RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	st, err := c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(arn)})
	if err != nil || !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 || st.NextRotationDate == nil {
		t.Fatalf("rotation status after EnableKeyRotation: %v %+v", err, st)
	}
	if _, err := c.DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(id)}); err != nil || st.KeyRotationEnabled {
		t.Fatalf("rotation status after DisableKeyRotation: %v %+v", err, st)
	}
	rot, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(id)})
	if err != nil || aws.ToString(rot.KeyId) != arn {
		t.Fatalf("RotateKeyOnDemand: %v", err)
	}
	// The old ciphertext still opens; a new one names version 2.
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}); err != nil {
		t.Fatalf("Decrypt after rotation: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	if r, _ := e.rec.last("kms:Encrypt"); r.Version != 2 || r.KeyID != id || r.Door != "aws-kms" {
		t.Fatalf("record of an Encrypt after rotation: version %d key %q door %q", r.Version, r.KeyID, r.Door)
	}

	// Tags: CreateKey's, added, removed, listed.
	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(arn), Tags: []types.Tag{{TagKey: aws.String("env"), TagValue: aws.String("prod")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: aws.String(id), TagKeys: []string{"team"}}); err != nil {
		t.Fatal(err)
	}
	lt, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(id)})
	if err != nil || len(lt.Tags) != 1 || aws.ToString(lt.Tags[0].TagKey) != "env" || aws.ToString(lt.Tags[0].TagValue) != "prod" {
		t.Fatalf("ListResourceTags: %v %+v", err, lt)
	}
	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(id), Tags: []types.Tag{{TagKey: aws.String("a"), TagValue: aws.String("1")}, {TagKey: aws.String("a"), TagValue: aws.String("2")}}}); !errors.As(err, new(*types.TagException)) {
		t.Fatalf("TagResource with a key twice: %v", err)
	}

	// Key policy: a Coffer policy document under the name "default".
	doc := "statements:\n  - effect: allow\n    actions: [\"kms:*\", \"key:*\"]\n    resources: [\"*\"]\n"
	if _, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(id), Policy: aws.String(doc)}); err != nil {
		t.Fatal(err)
	}
	if kp, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(arn)}); err != nil || aws.ToString(kp.Policy) != doc || aws.ToString(kp.PolicyName) != "default" {
		t.Fatalf("GetKeyPolicy: %v %+v", err, kp)
	}
	var restPolicy client.KeyPolicy
	e.rest("GET", "/v1/keys/"+id+"/policy", e.root, nil, &restPolicy)
	if restPolicy.Document != doc {
		t.Fatalf("the REST API's view of the key policy: %q", restPolicy.Document)
	}
	if _, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(id), Policy: aws.String("statements: [")}); !errors.As(err, new(*types.MalformedPolicyDocumentException)) {
		t.Fatalf("PutKeyPolicy of a malformed document: %v", err)
	}
	if _, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(id), PolicyName: aws.String("other")}); apiCode(err) != "ValidationException" {
		t.Fatalf("GetKeyPolicy of another name: %v", err)
	}

	// Lifecycle.
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")}); !errors.As(err, new(*types.DisabledException)) {
		t.Fatalf("Encrypt under a disabled key: %v", err)
	}
	if d, _ := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)}); d == nil || d.KeyMetadata.KeyState != types.KeyStateDisabled || d.KeyMetadata.Enabled {
		t.Fatalf("DescribeKey of a disabled key: %+v", d)
	}
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	sched, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(id), PendingWindowInDays: aws.Int32(7)})
	if err != nil || sched.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(sched.PendingWindowInDays) != 7 || sched.DeletionDate == nil ||
		sched.DeletionDate.Before(time.Now().Add(6*24*time.Hour)) {
		t.Fatalf("ScheduleKeyDeletion: %v %+v", err, sched)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")}); !errors.As(err, new(*types.KMSInvalidStateException)) {
		t.Fatalf("Encrypt under a key pending deletion: %v", err)
	}
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(id)}); !errors.As(err, new(*types.KMSInvalidStateException)) {
		t.Fatalf("ScheduleKeyDeletion twice: %v", err)
	}
	if cancel, err := c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(id)}); err != nil || aws.ToString(cancel.KeyId) != arn {
		t.Fatalf("CancelKeyDeletion: %v", err)
	}
	if d, _ := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)}); d == nil || d.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Fatalf("a key whose deletion was cancelled is disabled (as in AWS): %+v", d)
	}
	if _, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048}); apiCode(err) != "ValidationException" {
		t.Fatalf("CreateKey RSA: %v", err)
	}
}

// rawKMS sends a request of the AWS door signed by the SDK's signer with
// id and secret over signedBody at signedAt; tamper changes the request
// after signing. It returns the status and the AWS error type.
func (e *awsEnv) rawKMS(target, id, secret, signedBody, sentBody string, signedAt time.Time, tamper func(*http.Request), beforeSign ...func(*http.Request)) (int, string, string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.ts.URL+"/", strings.NewReader(signedBody))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService."+target)
	for _, f := range beforeSign {
		f(req)
	}
	sum := sha256.Sum256([]byte(signedBody))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req,
		hex.EncodeToString(sum[:]), "kms", e.cfg.Region, signedAt); err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "TrentService."+target)
	req.Body = io.NopCloser(strings.NewReader(sentBody))
	req.ContentLength = int64(len(sentBody))
	if tamper != nil {
		tamper(req)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out.Type, out.Message
}

// rawBody sends a well-signed request and returns its status and body.
func (e *awsEnv) rawBody(target, id, secret, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.ts.URL+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService."+target)
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, req,
		hex.EncodeToString(sum[:]), "kms", e.cfg.Region, time.Now()); err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		e.t.Errorf("%s answered as %q", target, ct)
	}
	return resp.StatusCode, string(raw)
}

// TestAWSKMSSignatures: every request must carry a SigV4 signature made
// with the access key's secret over exactly this request (body, host,
// signed headers) within 15 minutes; anything else is refused with the
// error type AWS gives, audited, and never reaches an operation.
func TestAWSKMSSignatures(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	ctx := context.Background()
	good := e.kms(ak.ID, ak.SecretAccessKey, "")
	if _, err := good.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("a well-signed request: %v", err)
	}
	const body = `{"NumberOfBytes":16}`
	now := time.Now()
	if st, typ, msg := e.rawKMS("GenerateRandom", ak.ID, ak.SecretAccessKey, body, body, now, nil); st != 200 {
		t.Fatalf("raw well-signed request: %d %s %s", st, typ, msg)
	}

	// The SDK client with the wrong secret.
	if _, err := e.kms(ak.ID, "cfsk_wrong", "").ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "InvalidSignatureException" {
		t.Fatalf("wrong secret: %v", err)
	}
	if r, _ := e.rec.last("key:List"); r.Outcome != "error" || r.ErrorCode != "unauthenticated" || r.Door != "aws-kms" || r.Principal.ID != ak.ID {
		t.Fatalf("record of the wrong secret: %+v", r)
	}
	// Temporary credentials: none are issued yet.
	if _, err := e.kms(ak.ID, ak.SecretAccessKey, "session-token").ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "UnrecognizedClientException" {
		t.Fatalf("session token: %v", err)
	}
	// An unknown access key, well formed.
	unknown, unknownSecret := credential.NewAccessKey()
	if _, err := e.kms(unknown, unknownSecret, "").ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "UnrecognizedClientException" {
		t.Fatalf("unknown access key: %v", err)
	}
	if _, err := e.kms("AKIAIOSFODNN7EXAMPLE", "x", "").ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "UnrecognizedClientException" {
		t.Fatalf("an AWS access key id: %v", err)
	}
	// Signed by the SDK for another region than the server's.
	elsewhere := kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.ts.URL), HTTPClient: e.ts.Client(),
		Credentials: credentials.NewStaticCredentialsProvider(ak.ID, ak.SecretAccessKey, ""), Retryer: aws.NopRetryer{}})
	if _, err := elsewhere.ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "InvalidSignatureException" || !strings.Contains(err.Error(), "eu-west-3") {
		t.Fatalf("another region: %v", err)
	}
	// A signature that leaves the operation out: X-Amz-Target set after
	// signing could be anything.
	st, typ, _ := e.rawKMS("GenerateRandom", ak.ID, ak.SecretAccessKey, body, body, now, nil, func(r *http.Request) { r.Header.Del("X-Amz-Target") })
	if st != 400 || typ != "IncompleteSignatureException" {
		t.Fatalf("target not signed: %d %s", st, typ)
	}

	cases := []struct {
		name, signed, sent string
		at                 time.Time
		tamper             func(*http.Request)
		want               string
	}{
		{"another body", body, `{"NumberOfBytes":32}`, now, nil, "InvalidSignatureException"},
		{"another host", body, body, now, func(r *http.Request) {}, "InvalidSignatureException"},
		{"another target", body, body, now, func(r *http.Request) { r.Header.Set("X-Amz-Target", "TrentService.ListKeys") }, "InvalidSignatureException"},
		{"an added signed header changed", body, body, now, func(r *http.Request) { r.Header.Set("Content-Type", "application/x-amz-json-1.1; x") }, "SerializationException"},
		{"20 minutes old", body, body, now.Add(-20 * time.Minute), nil, "InvalidSignatureException"},
		{"20 minutes ahead", body, body, now.Add(20 * time.Minute), nil, "InvalidSignatureException"},
		{"no X-Amz-Date", body, body, now, func(r *http.Request) { r.Header.Del("X-Amz-Date") }, "IncompleteSignatureException"},
		{"no signature", body, body, now, func(r *http.Request) { r.Header.Del("Authorization") }, "IncompleteSignatureException"},
		{"another service's scope", body, body, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/kms/", "/s3/", 1))
		}, "IncompleteSignatureException"},
		{"a scope date not X-Amz-Date's", body, body, now, func(r *http.Request) {
			d := now.UTC().Format("20060102")
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/"+d+"/", "/"+now.UTC().Add(-48*time.Hour).Format("20060102")+"/", 1))
		}, "IncompleteSignatureException"},
		{"another region", body, body, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/eu-west-3/", "/us-east-1/", 1))
		}, "InvalidSignatureException"},
	}
	for _, c := range cases {
		tamper := c.tamper
		if c.name == "another host" {
			// Signed for another host, sent to this one.
			req, _ := http.NewRequest("POST", "https://kms.attacker.example/", strings.NewReader(c.signed))
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			req.Header.Set("X-Amz-Target", "TrentService.GenerateRandom")
			sum := sha256.Sum256([]byte(c.signed))
			v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: ak.ID, SecretAccessKey: ak.SecretAccessKey}, req, hex.EncodeToString(sum[:]), "kms", e.cfg.Region, now)
			auth, date := req.Header.Get("Authorization"), req.Header.Get("X-Amz-Date")
			tamper = func(r *http.Request) { r.Header.Set("Authorization", auth); r.Header.Set("X-Amz-Date", date) }
		}
		st, typ, msg := e.rawKMS("GenerateRandom", ak.ID, ak.SecretAccessKey, c.signed, c.sent, c.at, tamper)
		if st != 400 || typ != c.want {
			t.Errorf("%s: %d %s %s, want 400 %s", c.name, st, typ, msg, c.want)
		}
		if strings.Contains(msg, ak.SecretAccessKey) {
			t.Errorf("%s: the message repeats the secret", c.name)
		}
		if r, _ := e.rec.last("kms:GenerateRandom"); c.want != "SerializationException" && (r.Outcome != "error" || r.Door != "aws-kms" || r.Status != 400) {
			t.Errorf("%s: record %+v", c.name, r)
		}
	}

	// A disabled, then deleted, access key.
	e.rest("PATCH", "/v1/access-keys/"+ak.ID, e.root, client.UpdateAccessKeyRequest{Enabled: new(false)}, nil)
	if _, err := good.ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "UnrecognizedClientException" || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("disabled access key: %v", err)
	}
	e.rest("DELETE", "/v1/access-keys/"+ak.ID, e.root, nil, nil)
	if _, err := good.ListKeys(ctx, &kms.ListKeysInput{}); apiCode(err) != "UnrecognizedClientException" {
		t.Fatalf("deleted access key: %v", err)
	}
}

// TestAWSKMSRefusals: unknown operations, bad JSON, a bearer token instead
// of a signature, a body over the limit (refused before any
// authentication), and a policy denial (AccessDeniedException, audited).
func TestAWSKMSRefusals(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	now := time.Now()

	if st, typ, _ := e.rawKMS("ConnectCustomKeyStore", ak.ID, ak.SecretAccessKey, `{}`, `{}`, now, nil); st != 400 || typ != "UnknownOperationException" {
		t.Fatalf("unknown target: %d %s", st, typ)
	}
	if r, _ := e.rec.last("api:UnknownRoute"); r.Door != "aws-kms" || r.Outcome != "error" {
		t.Fatalf("record of the unknown target: %+v", r)
	}
	for _, bad := range []string{`{"NumberOfBytes":`, `[1]`, `{"NumberOfBytes":"many"}`, `{"Unknown":1}`} {
		if st, typ, msg := e.rawKMS("GenerateRandom", ak.ID, ak.SecretAccessKey, bad, bad, now, nil); st != 400 || typ != "SerializationException" {
			t.Errorf("body %s: %d %s %s", bad, st, typ, msg)
		}
	}
	// A REST bearer token is no signature.
	st, typ, _ := e.rawKMS("ListKeys", ak.ID, ak.SecretAccessKey, `{}`, `{}`, now, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+e.root) })
	if st != 400 || typ != "IncompleteSignatureException" {
		t.Fatalf("bearer token on the AWS door: %d %s", st, typ)
	}
	// Nothing else on / changed: without the target it is no route.
	req, _ := http.NewRequest("POST", e.ts.URL+"/", strings.NewReader("{}"))
	if resp, err := e.ts.Client().Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("POST / without X-Amz-Target: %v %v", err, resp.StatusCode)
	}

	// A body over the limit is refused before anything is verified: an
	// unsigned request gets 413, not a signature error.
	big := `{"Plaintext":"` + strings.Repeat("A", 200<<10) + `"}`
	st, typ, _ = e.rawKMS("Encrypt", ak.ID, ak.SecretAccessKey, "{}", big, now, func(r *http.Request) { r.Header.Del("Authorization") })
	if st != 413 {
		t.Fatalf("oversized unsigned body: %d %s", st, typ)
	}
	if r, _ := e.rec.last("kms:Encrypt"); r.ErrorCode != "body_too_large" || r.Principal.Kind != "anonymous" {
		t.Fatalf("record of the oversized body: %+v", r)
	}

	// Policy denial: encrypt only under alias/app.
	ctx := context.Background()
	root := e.kms(ak.ID, ak.SecretAccessKey, "")
	app, err := root.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	appID := aws.ToString(app.KeyMetadata.KeyId)
	if _, err := root.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: app.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	otherKey, err := root.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	limited := e.accessKey("encrypt-app", `statements:
  - effect: allow
    actions: [kms:Encrypt]
    resources: [alias/app]
    conditions:
      StringEquals:
        context.tenant: t1
`)
	c := e.kms(limited.ID, limited.SecretAccessKey, "")
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/app"), Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "t1"}})
	if err != nil {
		t.Fatalf("allowed Encrypt: %v", err)
	}
	if r, _ := e.rec.last("kms:Encrypt"); r.Outcome != "ok" || r.KeyID != appID || r.Door != "aws-kms" || r.Principal.ID != limited.ID {
		t.Fatalf("record of the allowed Encrypt: %+v", r)
	}
	denied := []struct {
		name string
		call func() error
	}{
		{"another context", func() error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/app"), Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "t2"}})
			return err
		}},
		{"another key", func() error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: otherKey.KeyMetadata.Arn, Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "t1"}})
			return err
		}},
		{"Decrypt", func() error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"tenant": "t1"}})
			return err
		}},
		{"ReEncrypt", func() error {
			_, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: map[string]string{"tenant": "t1"}, DestinationKeyId: aws.String("alias/app")})
			return err
		}},
		{"CreateAlias", func() error {
			_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app2"), TargetKeyId: aws.String(appID)})
			return err
		}},
		{"ScheduleKeyDeletion", func() error {
			_, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String("alias/app")})
			return err
		}},
	}
	for _, d := range denied {
		err := d.call()
		if apiCode(err) != "AccessDeniedException" {
			t.Errorf("%s: %v, want AccessDeniedException", d.name, err)
		}
	}
	if r, _ := e.rec.last("kms:Encrypt"); r.Outcome != "error" || r.ErrorCode != "permission_denied" || r.Door != "aws-kms" ||
		r.Principal.ID != limited.ID || r.Status != 400 {
		t.Fatalf("record of the denied Encrypt: %+v", r)
	}
	if r, _ := e.rec.last("key:ScheduleDeletion"); r.Outcome != "error" || r.ErrorCode != "permission_denied" || r.Door != "aws-kms" {
		t.Fatalf("record of the denied ScheduleKeyDeletion: %+v", r)
	}
	if d, _ := root.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(appID)}); d == nil || d.KeyMetadata.KeyState != types.KeyStateEnabled {
		t.Fatalf("the denied deletion changed the key: %+v", d)
	}

	// ReEncrypt is two decisions: from the source key, to the destination.
	re := e.accessKey("reencrypt-app", `statements:
  - effect: allow
    actions: [kms:ReEncrypt, kms:ReEncryptTo]
    resources: [alias/app]
`)
	rc := e.kms(re.ID, re.SecretAccessKey, "")
	t1 := map[string]string{"tenant": "t1"}
	if _, err := rc.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: t1, DestinationKeyId: aws.String("alias/app")}); err != nil {
		t.Fatalf("allowed ReEncrypt: %v", err)
	}
	if _, err := rc.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: t1, DestinationKeyId: otherKey.KeyMetadata.KeyId}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("ReEncrypt to a key not allowed: %v", err)
	}
	if r, _ := e.rec.last("kms:ReEncrypt"); r.Outcome != "error" || r.ErrorCode != "permission_denied" || r.Door != "aws-kms" {
		t.Fatalf("record of the denied ReEncrypt: %+v", r)
	}
	otherCT, err := root.Encrypt(ctx, &kms.EncryptInput{KeyId: otherKey.KeyMetadata.KeyId, Plaintext: []byte("o")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: otherCT.CiphertextBlob, DestinationKeyId: aws.String("alias/app")}); apiCode(err) != "AccessDeniedException" {
		t.Fatalf("ReEncrypt from a key not allowed: %v", err)
	}
}

// BenchmarkEncryptDoors compares Encrypt through the AWS door (the SDK
// client, SigV4 verified) with Encrypt through the REST API (a bearer
// token), same server, same key, same plaintext.
func BenchmarkEncryptDoors(b *testing.B) {
	e := newAWSEnv(b)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	id := aws.ToString(k.KeyMetadata.KeyId)
	plain := bytes.Repeat([]byte("p"), 256)
	b.Run("aws-sigv4", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: plain}); err != nil {
				b.Fatal(err)
			}
		}
	})
	hc := e.ts.Client()
	// The same request signed by the SDK's signer without the SDK client
	// (its middleware stack is client-side cost).
	awsBody, _ := json.Marshal(map[string]any{"KeyId": id, "Plaintext": plain})
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: ak.ID, SecretAccessKey: ak.SecretAccessKey}
	sum := sha256.Sum256(awsBody)
	b.Run("aws-sigv4-raw", func(b *testing.B) {
		for b.Loop() {
			req, _ := http.NewRequest("POST", e.ts.URL+"/", bytes.NewReader(awsBody))
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
			if err := signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "kms", e.cfg.Region, time.Now()); err != nil {
				b.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	})
	body, _ := json.Marshal(client.EncryptRequest{KeyID: id, Plaintext: plain})
	b.Run("rest-bearer", func(b *testing.B) {
		for b.Loop() {
			req, _ := http.NewRequest("POST", e.ts.URL+"/v1/kms/encrypt", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.root)
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	})
}
