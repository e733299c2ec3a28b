package kube_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/kube"
)

// TestSTSWebIdentityE2E runs IRSA without a cloud: a real kube-apiserver
// mints a projected service-account token, the stock AWS SDK exchanges it
// at the real coffer binary's STS door (AssumeRoleWithWebIdentity) for
// temporary credentials, and signs KMS calls with them; once through
// stscreds.NewWebIdentityRoleProvider, once through config.LoadDefaultConfig
// with the environment a pod gets (AWS_WEB_IDENTITY_TOKEN_FILE,
// AWS_ROLE_ARN, AWS_ENDPOINT_URL_STS/KMS). Then what must be refused is.
func TestSTSWebIdentityE2E(t *testing.T) {
	kube.RequireE2E(t)
	etcd := kube.StartEtcd(t)
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{ExtraArgs: []string{"--external-hostname=127.0.0.1"}})
	coffer := kube.StartCoffer(t)
	ctx := context.Background()
	root := coffer.Client()

	const (
		audience = "sts.amazonaws.com"
		cluster  = "kind"
		alias    = "alias/app"
		// The dev server's aws_kms defaults.
		region  = "us-east-1"
		roleARN = "arn:aws:iam::000000000000:role/app"
	)
	api.CreateServiceAccount(t, "team-a", "api")
	api.CreateServiceAccount(t, "team-b", "api")
	coffer.CreateKey(alias)
	if _, err := root.PutPolicy(ctx, "app", client.PutPolicyRequest{Document: `statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: ["alias/app"]
`}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: cluster, Mode: "jwks", DiscoveryURL: api.URL, CACert: string(api.CACertPEM()), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.CreateRole(ctx, client.Role{Name: "app", Policies: []string{"app"}, MaxTTL: "2h",
		Kubernetes: []client.KubernetesTrust{{Cluster: cluster, Namespace: "team-a", ServiceAccount: "api", Audience: audience}}}); err != nil {
		t.Fatal(err)
	}
	// The same trust through a cluster that asks the apiserver (TokenReview)
	// instead of checking the token against the cluster's JWKS.
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: cluster + "-tr", Mode: "tokenreview", APIServer: api.URL, CACert: string(api.CACertPEM()), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.CreateRole(ctx, client.Role{Name: "app-tr", Policies: []string{"app"}, MaxTTL: "2h",
		Kubernetes: []client.KubernetesTrust{{Cluster: cluster + "-tr", Namespace: "team-a", ServiceAccount: "api", Audience: audience}}}); err != nil {
		t.Fatal(err)
	}
	// Role "app" again, for the expired-token case, so its failed logins
	// do not count against the refusals' login budget for "app".
	if _, err := root.CreateRole(ctx, client.Role{Name: "app-exp", Policies: []string{"app"}, MaxTTL: "2h",
		Kubernetes: []client.KubernetesTrust{{Cluster: cluster, Namespace: "team-a", ServiceAccount: "api", Audience: audience}}}); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(api.ServiceAccountToken(t, "team-a", "api", audience, 600)), 0o600); err != nil {
		t.Fatal(err)
	}
	httpClient := &http.Client{Timeout: 30 * time.Second}
	stsClient := func(creds aws.CredentialsProvider) *sts.Client {
		return sts.New(sts.Options{Region: region, BaseEndpoint: aws.String(coffer.Addr), Credentials: creds, HTTPClient: httpClient, Retryer: aws.NopRetryer{}})
	}
	kmsClient := func(creds aws.CredentialsProvider) *kms.Client {
		return kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(coffer.Addr), Credentials: creds, HTTPClient: httpClient, Retryer: aws.NopRetryer{}})
	}
	roundTrip := func(t *testing.T, k *kms.Client) {
		t.Helper()
		enc, err := k.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("pod secret")})
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		dec, err := k.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
		if err != nil || string(dec.Plaintext) != "pod secret" {
			t.Fatalf("Decrypt: %q %v", dec.Plaintext, err)
		}
	}

	var session aws.Credentials
	if !t.Run("web identity provider", func(t *testing.T) {
		prov := stscreds.NewWebIdentityRoleProvider(stsClient(aws.AnonymousCredentials{}), roleARN, stscreds.IdentityTokenFile(tokenFile),
			func(o *stscreds.WebIdentityRoleOptions) { o.RoleSessionName = "e2e-provider" })
		creds := aws.NewCredentialsCache(prov)
		roundTrip(t, kmsClient(creds))
		var err error
		if session, err = creds.Retrieve(ctx); err != nil {
			t.Fatal(err)
		}
		id, err := stsClient(creds).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatal(err)
		}
		if *id.Arn != "arn:aws:sts::000000000000:assumed-role/app/e2e-provider" {
			t.Errorf("GetCallerIdentity: %s", *id.Arn)
		}
	}) {
		return
	}

	t.Run("default config from a pod's environment", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "empty")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{
			"AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile,
			"AWS_ROLE_ARN":                roleARN,
			"AWS_ROLE_SESSION_NAME":       "e2e-env",
			"AWS_REGION":                  region,
			"AWS_ENDPOINT_URL_STS":        coffer.Addr,
			"AWS_ENDPOINT_URL_KMS":        coffer.Addr,
			// Nothing of the machine running the test takes part.
			"AWS_CONFIG_FILE": empty, "AWS_SHARED_CREDENTIALS_FILE": empty, "AWS_PROFILE": "",
			"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
			"AWS_ENDPOINT_URL": "", "AWS_EC2_METADATA_DISABLED": "true", "AWS_CA_BUNDLE": "",
		} {
			t.Setenv(k, v)
		}
		cfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(httpClient))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, kms.NewFromConfig(cfg))
		id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatal(err)
		}
		if *id.Arn != "arn:aws:sts::000000000000:assumed-role/app/e2e-env" || *id.Account != "000000000000" {
			t.Errorf("GetCallerIdentity: %s %s", *id.Arn, *id.Account)
		}
	})

	// An expired web-identity token is ExpiredTokenException (the SDK then
	// reads the token file again; InvalidIdentityToken it would retry as
	// is), whether Coffer checks the token itself or the apiserver does.
	// The tokens are the apiserver's own, re-signed with its key with
	// their times moved: one unchanged (it must pass, so the re-signing is
	// sound) and one that expired five minutes ago.
	t.Run("expired tokens", func(t *testing.T) {
		anon := stsClient(aws.AnonymousCredentials{})
		fresh := api.ServiceAccountToken(t, "team-a", "api", audience, 600)
		unchanged := api.ReissueToken(t, fresh, func(map[string]any) {})
		expired := api.ReissueToken(t, fresh, func(c map[string]any) {
			now := time.Now()
			c["iat"], c["nbf"], c["exp"] = now.Add(-20*time.Minute).Unix(), now.Add(-20*time.Minute).Unix(), now.Add(-5*time.Minute).Unix()
		})
		for _, arn := range []string{roleARN + "-exp", roleARN + "-tr"} {
			assume := func(jwt string) error {
				_, err := anon.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(arn), WebIdentityToken: aws.String(jwt), RoleSessionName: aws.String("e2e-times")})
				return err
			}
			if err := assume(unchanged); err != nil {
				t.Fatalf("%s: the re-signed token, times unchanged: %v", arn, err)
			}
			if err := assume(expired); awsCode(err) != "ExpiredTokenException" {
				t.Errorf("%s: an expired token: %v (code %q), want ExpiredTokenException", arn, err, awsCode(err))
			}
		}
	})

	t.Run("refusals", func(t *testing.T) {
		anon := stsClient(aws.AnonymousCredentials{})
		good := api.ServiceAccountToken(t, "team-a", "api", audience, 600)
		assume := func(arn, jwt, name string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
			return anon.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(arn), WebIdentityToken: aws.String(jwt), RoleSessionName: aws.String(name)})
		}
		for _, c := range []struct{ name, arn, jwt, code string }{
			{"untrusted service account", roleARN, api.ServiceAccountToken(t, "team-b", "api", audience, 600), "AccessDenied"},
			{"another audience", roleARN, api.ServiceAccountToken(t, "team-a", "api", "vault", 600), "InvalidIdentityToken"},
			{"tampered token", roleARN, tamperJWT(good), "InvalidIdentityToken"},
			{"another account", "arn:aws:iam::111111111111:role/app", good, "AccessDenied"},
			{"malformed ARN", "arn:aws:iam:us-east-1:000000000000:role/app", good, "ValidationError"},
		} {
			_, err := assume(c.arn, c.jwt, "e2e-refused")
			if code := awsCode(err); code != c.code {
				t.Errorf("%s: %v (code %q), want %s", c.name, err, code, c.code)
			}
		}

		a, err := assume(roleARN, good, "e2e-a")
		if err != nil {
			t.Fatal(err)
		}
		ac := a.Credentials
		static := func(id, secret, tok string) *kms.Client {
			return kmsClient(credentials.NewStaticCredentialsProvider(id, secret, tok))
		}
		encrypt := func(k *kms.Client) error {
			_, err := k.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")})
			return err
		}
		if err := encrypt(static(*ac.AccessKeyId, *ac.SecretAccessKey, *ac.SessionToken)); err != nil {
			t.Fatalf("session a: %v", err)
		}
		if err := encrypt(static(session.AccessKeyID, *ac.SecretAccessKey, *ac.SessionToken)); awsCode(err) != "UnrecognizedClientException" {
			t.Errorf("session a's token under another session's key id: %v", err)
		}
		if err := encrypt(static(*ac.AccessKeyId, "a-guessed-secret-a-guessed-secret-a-guess", *ac.SessionToken)); awsCode(err) != "InvalidSignatureException" {
			t.Errorf("a guessed secret: %v", err)
		}
		bearer, err := client.New(coffer.Addr, client.WithToken(*ac.SessionToken))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bearer.Encrypt(ctx, client.EncryptRequest{KeyID: alias, Plaintext: []byte("x")}); err == nil || !strings.Contains(err.Error(), "X-Amz-Security-Token") {
			t.Errorf("the session token as a bearer token: %v", err)
		}
		if _, err := anon.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); awsCode(err) != "MissingAuthenticationToken" {
			t.Errorf("unsigned GetCallerIdentity: %v", err)
		}
		resp, err := http.Post(coffer.Addr+"/", "application/x-www-form-urlencoded", strings.NewReader("Action=AssumeRole&Version=2011-06-15"))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), "<Code>InvalidAction</Code>") {
			t.Errorf("unknown Action: %d %s", resp.StatusCode, raw)
		}

		// Revoking the service account's credentials ends every session
		// at the next call, and its old tokens get no new one.
		start := time.Now()
		if _, err := root.RevokePrincipal(ctx, "kubernetes:"+cluster+"/team-a/api"); err != nil {
			t.Fatal(err)
		}
		if err := encrypt(static(*ac.AccessKeyId, *ac.SecretAccessKey, *ac.SessionToken)); awsCode(err) != "UnrecognizedClientException" {
			t.Errorf("a session of a revoked service account: %v", err)
		}
		if err := encrypt(static(session.AccessKeyID, session.SecretAccessKey, session.SessionToken)); awsCode(err) != "UnrecognizedClientException" {
			t.Errorf("the provider's session after the revocation: %v", err)
		}
		t.Logf("revocation to refusal: %s", time.Since(start).Round(time.Millisecond))
		if _, err := assume(roleARN, good, "e2e-after"); awsCode(err) != "InvalidIdentityToken" {
			t.Errorf("a service-account token issued before the revocation: %v", err)
		}
	})
}

// awsCode is the AWS error code of err ("" when it is no API error).
func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// tamperJWT changes one character of a JWT's payload.
func tamperJWT(jwt string) string {
	parts := strings.Split(jwt, ".")
	p := []byte(parts[1])
	if p[10] == 'A' {
		p[10] = 'B'
	} else {
		p[10] = 'A'
	}
	parts[1] = string(p)
	return strings.Join(parts, ".")
}
