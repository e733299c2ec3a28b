package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/server/awskms"
)

// stsEnv is an iamEnv with the AWS doors configured and the test cluster
// "kind" registered, and a role "pod" trusting team-a/api.
type stsEnv struct {
	*iamEnv
	cfg awskms.Config
	key string // a key the role may use
}

func newSTSEnv(t *testing.T) *stsEnv {
	cfg := awskms.Config{Partition: "aws", Region: "eu-west-3", Account: "123456789012"}
	e := &stsEnv{iamEnv: newIAMEnvWith(t, func(o *server.Options) { o.AWSKMS = cfg }), cfg: cfg}
	e.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.other, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.must("PUT", "/v1/policies/kms", e.root, client.PutPolicyRequest{Document: allowAll}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "pod", Policies: []string{"kms"}, MaxTTL: "2h",
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.registerKind()
	var k client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{}, &k)
	e.key = k.ID
	return e
}

func (e *stsEnv) sts(creds aws.CredentialsProvider) *sts.Client {
	return sts.New(sts.Options{Region: e.cfg.Region, BaseEndpoint: aws.String(e.url), Credentials: creds, Retryer: aws.NopRetryer{}})
}

func (e *stsEnv) kms(creds aws.CredentialsProvider) *kms.Client {
	return kms.New(kms.Options{Region: e.cfg.Region, BaseEndpoint: aws.String(e.url), Credentials: creds, Retryer: aws.NopRetryer{}})
}

func (e *stsEnv) roleARN(role string) string { return "arn:aws:iam::123456789012:role/" + role }

// assume calls AssumeRoleWithWebIdentity with the SDK, unsigned as the SDK
// sends it.
func (e *stsEnv) assume(roleARN, token, session string, dur int32) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	in := &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(roleARN), WebIdentityToken: aws.String(token), RoleSessionName: aws.String(session)}
	if dur != 0 {
		in.DurationSeconds = aws.Int32(dur)
	}
	return e.sts(aws.AnonymousCredentials{}).AssumeRoleWithWebIdentity(context.Background(), in)
}

type tokenString string

func (t tokenString) GetIdentityToken() ([]byte, error) { return []byte(t), nil }

// TestSTSWebIdentityFlow: the SDK's web-identity provider gets temporary
// credentials for a trusted service account, and the SDK's KMS client
// signs with them; GetCallerIdentity names the session and an access key;
// the session name is in the audit; the duration is capped by the role.
func TestSTSWebIdentityFlow(t *testing.T) {
	e := newSTSEnv(t)
	ctx := context.Background()
	prov := stscreds.NewWebIdentityRoleProvider(e.sts(aws.AnonymousCredentials{}), e.roleARN("pod"), tokenString(e.jwtFor(e.jwtKey, nil)),
		func(o *stscreds.WebIdentityRoleOptions) { o.RoleSessionName = "build-42" })
	creds := aws.NewCredentialsCache(prov)
	c, err := creds.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.AccessKeyID, "cfst_") || c.SessionToken == "" || c.SecretAccessKey == "" {
		t.Fatalf("credentials: %+v", c)
	}
	// DurationSeconds defaults to 3600 and the role allows 2h.
	if d := time.Until(c.Expires); d < 55*time.Minute || d > 61*time.Minute {
		t.Errorf("expires in %s, want about 1h", d)
	}
	if r, ok := e.rec.last("auth:AssumeRole"); !ok || r.Door != "aws-sts" || r.Outcome != "ok" || r.Resource != "role/pod" {
		t.Errorf("login record: %+v", r)
	}

	k := e.kms(creds)
	enc, err := k.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(e.key), Plaintext: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := k.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "hello" {
		t.Fatalf("decrypt: %q %v", dec.Plaintext, err)
	}
	r, _ := e.rec.last("kms:Decrypt")
	if r.Door != "aws-kms" || r.Principal.Kind != "role" || r.Principal.Role != "pod" || r.Principal.Name != "build-42" ||
		r.Principal.Namespace != "team-a" || r.Principal.ServiceAccount != "api" {
		t.Errorf("decrypt record principal: %+v", r.Principal)
	}

	id, err := e.sts(creds).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Arn != "arn:aws:sts::123456789012:assumed-role/pod/build-42" || *id.Account != "123456789012" || *id.UserId != "pod:build-42" {
		t.Errorf("caller identity of the session: %s %s %s", *id.Arn, *id.Account, *id.UserId)
	}
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", e.root, client.CreateAccessKeyRequest{Policies: []string{}}, &ak)
	id, err = e.sts(credentials.NewStaticCredentialsProvider(ak.ID, ak.SecretAccessKey, "")).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Arn != "arn:aws:iam::123456789012:user/"+ak.ID || *id.UserId != ak.ID {
		t.Errorf("caller identity of an access key: %s %s", *id.Arn, *id.UserId)
	}

	// The role's max_ttl caps a longer request.
	out, err := e.assume(e.roleARN("pod"), e.jwtFor(e.jwtKey, nil), "long", 43200)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.Credentials.Expiration); d > 2*time.Hour+time.Minute || d < 110*time.Minute {
		t.Errorf("43200s on a role of max_ttl 2h: expires in %s", d)
	}
	// Past their expiry, the credentials are refused with the error
	// the SDKs know for it.
	e.offset.Store(int64(3 * time.Hour))
	if _, err := k.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(e.key), Plaintext: []byte("late")}); apiCode(err) != "ExpiredTokenException" {
		t.Errorf("KMS with expired credentials: %v", err)
	}
	if _, err := e.sts(creds).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); apiCode(err) != "ExpiredToken" {
		t.Errorf("GetCallerIdentity with expired credentials: %v", err)
	}
	e.offset.Store(0)
	if *out.SubjectFromWebIdentityToken != "system:serviceaccount:team-a:api" || *out.Provider != "https://kind.example" || *out.Audience != "coffer" ||
		*out.AssumedRoleUser.Arn != "arn:aws:sts::123456789012:assumed-role/pod/long" {
		t.Errorf("answer: subject %s provider %s audience %s arn %s", *out.SubjectFromWebIdentityToken, *out.Provider, *out.Audience, *out.AssumedRoleUser.Arn)
	}
}

// TestSTSRefusals: each check of the STS door and of temporary credentials
// refuses what it must, with the error code the real service gives.
func TestSTSRefusals(t *testing.T) {
	e := newSTSEnv(t)
	ctx := context.Background()
	good := e.jwtFor(e.jwtKey, nil)
	cases := []struct {
		name, arn, token, session string
		dur                       int32
		code                      string
	}{
		{"untrusted service account", e.roleARN("pod"), e.jwtFor(e.jwtKey, func(c *jwt.Claims, p map[string]any) {
			c.Subject = "system:serviceaccount:team-b:api"
			p["kubernetes.io"] = map[string]any{"namespace": "team-b", "serviceaccount": map[string]string{"name": "api", "uid": "u-2"}}
		}), "s1", 0, "AccessDenied"},
		{"role that does not exist", e.roleARN("nope"), good, "s1", 0, "AccessDenied"},
		{"forged token", e.roleARN("pod"), e.jwtFor(e.other, nil), "s1", 0, "InvalidIdentityToken"},
		{"tampered token", e.roleARN("pod"), tamper(good), "s1", 0, "InvalidIdentityToken"},
		{"expired token", e.roleARN("pod"), e.jwtFor(e.jwtKey, func(c *jwt.Claims, _ map[string]any) {
			c.Expiry = jwt.NewNumericDate(time.Now().Add(-5 * time.Minute))
		}), "s1", 0, "ExpiredTokenException"},
		{"another account", "arn:aws:iam::999999999999:role/pod", good, "s1", 0, "AccessDenied"},
		{"another partition", "arn:aws-cn:iam::123456789012:role/pod", good, "s1", 0, "AccessDenied"},
		{"malformed ARN", "arn:aws:kms:eu-west-3:123456789012:key/pod", good, "s1", 0, "ValidationError"},
		{"bad session name", e.roleARN("pod"), good, "has space", 0, "ValidationError"},
		{"short session name", e.roleARN("pod"), good, "a", 0, "ValidationError"},
		{"duration too short", e.roleARN("pod"), good, "s1", 899, "ValidationError"},
		{"duration too long", e.roleARN("pod"), good, "s1", 43201, "ValidationError"},
	}
	for _, c := range cases {
		_, err := e.assume(c.arn, c.token, c.session, c.dur)
		if got := apiCode(err); got != c.code {
			t.Errorf("%s: %v (code %q), want %s", c.name, err, got, c.code)
		}
	}
	if r, _ := e.rec.last("auth:AssumeRole"); r.Door != "aws-sts" || r.Outcome != "error" {
		t.Errorf("refused login record: %+v", r)
	}

	// Two sessions.
	a, err := e.assume(e.roleARN("pod"), good, "sa", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.assume(e.roleARN("pod"), e.jwtFor(e.jwtKey, nil), "sb", 0)
	if err != nil {
		t.Fatal(err)
	}
	static := func(id, secret, token string) aws.CredentialsProvider {
		return credentials.NewStaticCredentialsProvider(id, secret, token)
	}
	ac := a.Credentials
	encrypt := func(creds aws.CredentialsProvider) error {
		_, err := e.kms(creds).Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(e.key), Plaintext: []byte("x")})
		return err
	}
	if err := encrypt(static(*ac.AccessKeyId, *ac.SecretAccessKey, *ac.SessionToken)); err != nil {
		t.Fatalf("session a: %v", err)
	}
	// Session a's token and secret under session b's key id.
	if err := encrypt(static(*b.Credentials.AccessKeyId, *ac.SecretAccessKey, *ac.SessionToken)); apiCode(err) != "UnrecognizedClientException" {
		t.Errorf("another session's key id: %v", err)
	}
	// A guessed secret.
	if err := encrypt(static(*ac.AccessKeyId, "guessed-secret-guessed-secret-guessed", *ac.SessionToken)); apiCode(err) != "InvalidSignatureException" {
		t.Errorf("guessed secret: %v", err)
	}
	// Session b's secret with a's token (and a's id).
	if err := encrypt(static(*ac.AccessKeyId, *b.Credentials.SecretAccessKey, *ac.SessionToken)); apiCode(err) != "InvalidSignatureException" {
		t.Errorf("another session's secret: %v", err)
	}
	// The session token is no bearer token, nor a Vault token.
	if st, _, raw := e.do("GET", "/v1/keys/"+e.key, bearer(*ac.SessionToken), nil); st != http.StatusUnauthorized || !strings.Contains(string(raw), "X-Amz-Security-Token") {
		t.Errorf("session token as bearer: %d %s", st, raw)
	}
	if st, _, raw := e.do("GET", "/v1/auth/token/lookup-self", http.Header{"X-Vault-Token": {*ac.SessionToken}}, nil); st != http.StatusForbidden {
		t.Errorf("session token as a Vault token: %d %s", st, raw)
	}
	// Revoking the session ends it at once.
	// (The access key id names the token's accessor.)
	accessor := "acc_" + strings.ToLower(strings.TrimPrefix(*ac.AccessKeyId, "cfst_"))
	e.must("POST", "/v1/auth/token/revoke", e.root, client.RevokeTokenRequest{Accessor: accessor}, nil)
	if err := encrypt(static(*ac.AccessKeyId, *ac.SecretAccessKey, *ac.SessionToken)); apiCode(err) != "UnrecognizedClientException" {
		t.Errorf("revoked session: %v", err)
	}
	// Revoking the service account ends the others.
	bc := b.Credentials
	e.must("POST", "/v1/auth/token/revoke-principal", e.root, map[string]string{"principal": "kubernetes:kind/team-a/api"}, nil)
	if err := encrypt(static(*bc.AccessKeyId, *bc.SecretAccessKey, *bc.SessionToken)); apiCode(err) != "UnrecognizedClientException" {
		t.Errorf("session of a revoked service account: %v", err)
	}

	// GetCallerIdentity must be signed.
	if _, err := e.sts(aws.AnonymousCredentials{}).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); apiCode(err) != "MissingAuthenticationToken" {
		t.Errorf("unsigned GetCallerIdentity: %v", err)
	}
	// An access key signing for another region.
	var ak client.CreateAccessKeyResponse
	e.must("POST", "/v1/access-keys", e.root, client.CreateAccessKeyRequest{Policies: []string{}}, &ak)
	other := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.url), Credentials: static(ak.ID, ak.SecretAccessKey, ""), Retryer: aws.NopRetryer{}})
	if _, err := other.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); apiCode(err) != "SignatureDoesNotMatch" {
		t.Errorf("GetCallerIdentity signed for another region: %v", err)
	}

	// Unknown and missing Action, unknown parameters, in AWS's XML shape.
	for _, c := range []struct{ form, code string }{
		{"Action=AssumeRole&Version=2011-06-15", "InvalidAction"},
		{"Version=2011-06-15", "MissingAction"},
		{"Action=GetCallerIdentity&Version=2011-06-15&Extra=1", "MissingAuthenticationToken"},
		{"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + url.QueryEscape(e.roleARN("pod")) + "&RoleSessionName=s&WebIdentityToken=" + good + "&Policy=x", "ValidationError"},
		{"Action=AssumeRoleWithWebIdentity&Version=2011-01-01", "ValidationError"},
	} {
		req, _ := http.NewRequest("POST", e.url+"/", strings.NewReader(c.form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || !strings.Contains(string(raw), "<Code>"+c.code+"</Code>") || !strings.Contains(string(raw), "<Type>Sender</Type>") ||
			!strings.Contains(string(raw), "<RequestId>") {
			t.Errorf("%s: %d %s, want %s", c.form[:min(len(c.form), 60)], resp.StatusCode, raw, c.code)
		}
	}
}

// tamper changes one character of the payload of a JWT.
func tamper(jwt string) string {
	parts := strings.Split(jwt, ".")
	p := []byte(parts[1])
	if p[5] == 'A' {
		p[5] = 'B'
	} else {
		p[5] = 'A'
	}
	parts[1] = string(p)
	return strings.Join(parts, ".")
}

// TestSTSLoginBudget: AssumeRoleWithWebIdentity failures count against
// the same (source, claimed principal) budget as the REST Kubernetes
// login: past it, Throttling, while another service account's claim is
// still verified; a body over the door's bound is refused with 413; every
// refusal is audited under door aws-sts.
func TestSTSLoginBudget(t *testing.T) {
	cfg := awskms.Config{Partition: "aws", Region: "eu-west-3", Account: "123456789012"}
	e := &stsEnv{iamEnv: newIAMEnvWith(t, func(o *server.Options) {
		o.AWSKMS = cfg
		o.AuthLimit = authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 3, PairRefill: time.Hour})
	}), cfg: cfg}
	e.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.other, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.must("PUT", "/v1/policies/kms", e.root, client.PutPolicyRequest{Document: allowAll}, nil)
	e.must("POST", "/v1/roles", e.root, client.Role{Name: "pod", Policies: []string{"kms"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "team-a", ServiceAccount: "api"}}}, nil)
	e.registerKind()

	forged := e.jwtFor(e.other, nil)
	codes := []string{}
	for range 5 {
		_, err := e.assume(e.roleARN("pod"), forged, "s1", 0)
		codes = append(codes, apiCode(err))
	}
	if strings.Join(codes, ",") != "InvalidIdentityToken,InvalidIdentityToken,InvalidIdentityToken,Throttling,Throttling" {
		t.Errorf("codes of repeated forged logins: %v", codes)
	}
	// Another service account (another claim) is not refused for them.
	if _, err := e.assume(e.roleARN("pod"), e.jwtFor(e.jwtKey, func(c *jwt.Claims, p map[string]any) {
		c.Subject = "system:serviceaccount:team-b:api"
		p["kubernetes.io"] = map[string]any{"namespace": "team-b", "serviceaccount": map[string]string{"name": "api", "uid": "u-2"}}
	}), "s1", 0); apiCode(err) != "AccessDenied" {
		t.Errorf("another claim after the budget of the first: %v", err)
	}

	big := "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&WebIdentityToken=" + strings.Repeat("a", 64<<10)
	req, _ := http.NewRequest("POST", e.url+"/", strings.NewReader(big))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(raw), "<ErrorResponse") {
		t.Errorf("oversized body: %d %s", resp.StatusCode, raw)
	}
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	n := 0
	for _, r := range e.rec.recs {
		if r.Door == "aws-sts" && r.Outcome == "error" {
			n++
		}
	}
	if n != 7 {
		t.Errorf("%d refusals audited under aws-sts, want 7", n)
	}
}
