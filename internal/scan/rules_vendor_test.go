package scan

import (
	"strings"
	"testing"
)

// Near misses of the vendor rules, checked by TestRulesFalsePositives
// (the scan path there is fp.txt: no Datadog or .netrc context).
var vendorFalsePositives = map[string][]string{
	"sonarqube-token": {"sonar.token=squ_" + strings.Repeat("0", 40), "sonar.token=sqp_@@R::hex:39@@", "sonar.token=sqx_@@R::hex:40@@",
		"sonar.token=squ_0123456789abcdef0123456789abcdef01234567"},
	"datadog-api-key": {`api_key = "@@R::hex:32@@"`, `DD_API_KEY=` + strings.Repeat("0", 32), `datadog_api_key = "@@R::hex:31@@"`,
		"variable \"build_hash\" {\n  default = \"@@R::hex:32@@\"\n}"},
	"datadog-app-key":         {`app_key = "@@R::hex:40@@"`, `DD_APP_KEY=${DD_APP_KEY}`, "variable \"git_sha\" {\n  default = \"@@R::hex:40@@\"\n}"},
	"gcp-oauth-refresh-token": {`"refresh_token": "1//0REPLACE_WITH_YOUR_REFRESH_TOKEN_FROM_THE_CONSENT_SCREEN"`, "ratio = n // 0", "1//0" + strings.Repeat("x", 60)},
	"gcp-oauth-access-token":  {`"access_token": "ya29.PLACEHOLDER"`, "tokens start with ya29. and expire", "ya29." + strings.Repeat("A", 60)},
	"mapbox-secret-token":     {"MAPBOX_TOKEN=@@MAPBOX:pk@@", "sk.eyJub3RhIjoibWFwYm94In0.@@R::URL:22@@"},
}

// Near misses added to the older vendor rules this issue made context-free
// or widened.
var vendorExtraFalsePositives = map[string][]string{
	// Test stand-ins and code in the AWS, Alibaba and Datadog SDKs.
	"generic-secret-assignment": {"api_key: abc-123-key", `AuthToken: "Basic abc123",`, "credential_source = Ec2InstanceMetadata",
		`next_page_token: "eyJvZmZzZXQiOjUwfQ=="`, `AccessToken: "dGhpcyBpcyBub3QgYSByZWFsIHZhbHVl",`,
		"token = listInvConf1.NextContinuationToken", "replace github.com/aws/aws-sdk-go-v2/credentials => ../credentials/"},
	"mailgun-api-key": {"cache-key-@@R::hex:32@@", "s3://thumbs/key-@@R::hex:32@@.png", "idempotency_key: key-@@R::hex:32@@",
		"MG_KEY=key-" + strings.Repeat("0", 32), "MG_KEY=key-0123456789abcdef0123456789abcdef", "MG_KEY=key-" + strings.Repeat("deadbeef", 4),
		"MG_PUBLIC=pubkey-@@R::hex:32@@"},
	"heroku-api-key": {"HEROKU_APP_ID=@@UUID@@", "heroku_release_uuid: @@UUID@@", "machine github.com login me password @@UUID@@",
		"machine api.heroku.com login me password $HEROKU_API_KEY"},
	"aws-secret-access-key": {`SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"`, `SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),`,
		`credentials.NewStaticCredentials(id, secret, "")`, `SecretAccessKeyDigest: "@@R::B64:40@@"`},
	"alibaba-access-key-secret": {"id = 'LTAI@@R::A62:16@@'\nsecret_hint = 'abcdefghijklmnopqrstuvwxyz1234'",
		"id = 'LTAI@@R::A62:16@@'\nsecret = '" + strings.Repeat("x", 30) + "'", "setAccessKeySecret(\"@@R::A62:30@@\") // no id near"},
}

func init() {
	for id, fps := range vendorFalsePositives {
		falsePositives[id] = fps
	}
	for id, fps := range vendorExtraFalsePositives {
		falsePositives[id] = append(falsePositives[id], fps...)
	}
}

// TestVendorRules: each rule reports the credential on the right line
// (once, under its own id), and each filter it relies on drops the near
// miss written for it.
func TestVendorRules(t *testing.T) {
	dd32, dd40 := "@@R::hex:32@@", "@@R::hex:40@@"
	cases := []struct {
		name, rule, path, text string
		line                   int // 0: no finding of rule
	}{
		// Mailgun: the format alone, as a value.
		{"mailgun env", "mailgun-api-key", ".env", "MG_KEY=key-" + dd32, 1},
		{"mailgun js", "mailgun-api-key", "m.js", "const mg = client({ username: 'api', key: 'key-" + dd32 + "' });", 1},
		{"mailgun yaml", "mailgun-api-key", "c.yml", "mail:\n  api_key: key-" + dd32, 2},
		{"mailgun inside a word", "mailgun-api-key", "c.go", `name := "cache-key-` + dd32 + `"`, 0},
		{"mailgun in a path", "mailgun-api-key", "c.go", `u := "s3://b/key-` + dd32 + `"`, 0},
		{"mailgun hash-like name", "mailgun-api-key", "c.yml", "etag: key-" + dd32, 0},
		{"mailgun id name", "mailgun-api-key", "c.yml", "run_id: key-" + dd32, 0},
		{"mailgun zeros", "mailgun-api-key", ".env", "MG_KEY=key-" + strings.Repeat("0", 32), 0},
		{"mailgun sequence", "mailgun-api-key", ".env", "MG_KEY=key-0123456789abcdef0123456789abcdef", 0},
		{"mailgun digits only", "mailgun-api-key", ".env", "MG_KEY=key-@@R::d:32@@", 0},
		{"mailgun low entropy", "mailgun-api-key", ".env", "MG_KEY=key-" + strings.Repeat("deadbeef", 4), 0},
		// SonarQube.
		{"sonar user token", "sonarqube-token", "sonar-project.properties", "sonar.token=@@R:squ_:hex:40@@", 1},
		{"sonar global token", "sonarqube-token", "ci.yml", "  SONAR_TOKEN: \"@@R:sqa_:hex:40@@\"", 1},
		{"sonar zeros", "sonarqube-token", "s.properties", "sonar.token=squ_" + strings.Repeat("0", 40), 0},
		// Datadog: a Datadog name, a Datadog block, a Datadog variable's default.
		{"dd env", "datadog-api-key", ".env", "DD_API_KEY=" + dd32, 1},
		{"dd app env", "datadog-app-key", ".env", "DD_APP_KEY=" + dd40, 1},
		{"dd provider block", "datadog-app-key", "main.tf", "provider \"datadog\" {\n  api_key = var.k\n  app_key = \"" + dd40 + "\"\n}", 3},
		{"dd variable default", "datadog-api-key", "variables.tf", "variable \"datadog_api_key\" {\n  type      = string\n  sensitive = true\n  default   = \"" + dd32 + "\"\n}", 4},
		{"dd agent config", "datadog-api-key", "/etc/datadog-agent/datadog.yaml", "api_key: " + dd32, 1},
		{"dd bare api_key", "datadog-api-key", "config.tf", "api_key = \"" + dd32 + "\"", 0},
		{"dd other variable default", "datadog-api-key", "variables.tf", "variable \"datadog_api_key\" {}\nvariable \"build_md5\" {\n  default = \"" + dd32 + "\"\n}", 0},
		{"dd block too far", "datadog-api-key", "main.tf", "provider \"datadog\" {}\n" + strings.Repeat("#\n", 9) + "api_key = \"" + dd32 + "\"", 0},
		{"dd sequence", "datadog-api-key", ".env", "DD_API_KEY=0123456789abcdef0123456789abcdef", 0},
		{"dd variable not a key", "datadog-api-key", "variables.tf", "variable \"datadog_dashboard_checksum\" {\n  default = \"" + dd32 + "\"\n}", 0},
		// Heroku: .netrc entries for its hosts win over netrc-password.
		{"heroku netrc split", "heroku-api-key", ".netrc", "machine api.heroku.com\n  login me@x.io\n  password @@UUID@@", 3},
		{"heroku netrc one line", "heroku-api-key", ".netrc", "machine git.heroku.com login me@x.io password @@UUID@@", 1},
		{"heroku netrc other host", "heroku-api-key", ".netrc", "machine api.heroku.com login a password @@UUID@@\nmachine gitlab.internal\n  login b\n  password @@UUID@@", 1},
		{"heroku env", "heroku-api-key", "deploy.sh", "export HEROKU_API_KEY=@@UUID@@", 1},
		{"heroku v2", "heroku-api-key", "ci.yml", "HEROKU_API_KEY: @@R:HRKU-AA:URL:58@@", 1},
		{"heroku dotted password key", "heroku-api-key", "app.properties", "db.password @@UUID@@", 0},
		{"heroku app id", "heroku-api-key", "deploy.sh", "HEROKU_APP_ID=@@UUID@@", 0},
		// Google OAuth.
		{"google refresh rclone", "gcp-oauth-refresh-token", "rclone.conf", `token = {"access_token":"","refresh_token":"@@R:1//0:URL:99@@","expiry":"2026-01-01T00:00:00Z"}`, 1},
		{"google refresh other prefix", "gcp-oauth-refresh-token", "token.json", `{"refresh_token": "@@R:1//03:URL:100@@"}`, 1},
		{"google refresh in a URL path", "gcp-oauth-refresh-token", "a.md", "see http://mirror.internal/v1//@@R::URL:60@@ for the file", 0},
		{"google access token", "gcp-oauth-access-token", "token.json", `{"token": "@@R:ya29.:URL:150@@"}`, 1},
		{"google refresh placeholder", "gcp-oauth-refresh-token", "rclone.conf", `"refresh_token":"1//0REPLACE_WITH_YOUR_REFRESH_TOKEN_FROM_RCLONE"`, 0},
		// AWS: SDK fields, constructors, notebooks.
		{"aws go field", "aws-secret-access-key", "c.go", `		SecretAccessKey: "@@R::B64:40@@",`, 1},
		{"aws go static", "aws-secret-access-key", "c.go", `creds := credentials.NewStaticCredentials(keyID, "@@R::B64:40@@", "")`, 1},
		{"aws js field", "aws-secret-access-key", "c.js", `  secretAccessKey: '@@R::B64:40@@',`, 1},
		{"aws notebook escaped", "aws-secret-access-key", "n.ipynb", `    "aws_secret_access_key = \"@@R::B64:40@@\"\n",`, 1},
		{"aws notebook environ", "aws-secret-access-key", "n.ipynb", `    "os.environ[\"AWS_SECRET_ACCESS_KEY\"] = \"@@R::B64:40@@\"\n",`, 1},
		{"aws java basic", "aws-secret-access-key", "U.java", `new BasicAWSCredentials("@@R:AKIA:AZ27:16@@", "@@R::B64:40@@")`, 1},
		{"aws java sdk v2", "aws-secret-access-key", "S3.java", `StaticCredentialsProvider.create(AwsBasicCredentials.create("@@R:AKIA:AZ27:16@@", "@@R::B64:40@@"))`, 1},
		{"aws go setenv", "aws-secret-access-key", "main_test.go", `	os.Setenv("AWS_SECRET_ACCESS_KEY", "@@R::B64:40@@")`, 1},
		{"aws java property", "aws-secret-access-key", "It.java", `System.setProperty("aws.secretKey", "@@R::B64:40@@");`, 1},
		{"aws setenv reference", "aws-secret-access-key", "main_test.go", `	os.Setenv("AWS_SECRET_ACCESS_KEY", secret)`, 0},
		{"aws python environ", "aws-secret-access-key", "n.py", `os.environ['AWS_SECRET_ACCESS_KEY'] = '@@R::B64:40@@'`, 1},
		{"aws documented example", "aws-secret-access-key", "c.go", `SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",`, 0},
		// Alibaba: the secret next to its id, under any "secret" name or as the next argument.
		{"alibaba positional", "alibaba-access-key-secret", "e.go", `c, err := ecs.NewClientWithAccessKey("cn-hangzhou", "@@R:LTAI:A62:20@@", "@@R::A62:30@@")`, 1},
		{"alibaba setter", "alibaba-access-key-secret", "C.java", ".setAccessKeyId(\"@@R:LTAI:A62:20@@\")\n.setAccessKeySecret(\"@@R::A62:30@@\")", 2},
		{"alibaba tea", "alibaba-access-key-secret", "c.go", "AccessKeyId: tea.String(\"@@R:LTAI:A62:20@@\"),\nAccessKeySecret: tea.String(\"@@R::A62:30@@\"),", 2},
		{"alibaba sequence", "alibaba-access-key-secret", "a.py", "ak = 'LTAI@@R::A62:16@@'\nsecret = 'abcdefghijklmnopqrstuvwxyz1234'", 0},
		{"alibaba one class", "alibaba-access-key-secret", "a.py", "ak = 'LTAI@@R::A62:16@@'\nsecret = '@@R::az:30@@'", 0},
		// Mapbox: sk. is secret, pk. public.
		{"mapbox secret", "mapbox-secret-token", "gradle.properties", "MAPBOX_DOWNLOADS_TOKEN=@@MAPBOX:sk@@", 1},
		{"mapbox secret in netrc", "mapbox-secret-token", ".netrc", "machine api.mapbox.com login mapbox password @@MAPBOX:sk@@", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := configFindings(t, c.path, c.text)
			var got []Finding
			for _, f := range fs {
				if f.RuleID == c.rule {
					got = append(got, f)
				}
			}
			if c.line == 0 {
				if len(got) != 0 {
					t.Fatalf("%s reported %s", c.rule, Redacted(got[0].Secret))
				}
				return
			}
			if len(got) != 1 || got[0].Line != c.line {
				t.Fatalf("want one %s finding on line %d; got %+v", c.rule, c.line, got)
			}
			for _, f := range fs {
				if f.Line == c.line && f.RuleID != c.rule && (strings.Contains(f.Secret, got[0].Secret) || strings.Contains(got[0].Secret, f.Secret)) {
					t.Errorf("the secret on line %d is also reported as %s", c.line, f.RuleID)
				}
			}
		})
	}
}

// TestPublicByDesign: publishable keys are never findings, whatever name
// they sit under; their secret counterparts still are.
func TestPublicByDesign(t *testing.T) {
	for _, text := range []string{
		"MAPBOX_ACCESS_TOKEN=@@MAPBOX:pk@@",
		"mapboxgl.accessToken = '@@MAPBOX:pk@@';",
		"stripePublicApiKey: 'pk_live_@@R::A62:24@@'",
		"DD_CLIENT_TOKEN=pub@@R::hex:32@@",
		"clientToken: 'pub@@R::hex:32@@',",
	} {
		if fs := configFindings(t, "app.env", text); len(fs) != 0 {
			t.Errorf("%q: %s reported", text, fs[0].RuleID)
		}
	}
	for _, text := range []string{"MAPBOX_SECRET_TOKEN=@@R:pk.:A62:30@@1x", "DD_CLIENT_TOKEN=pub@@R::A62:33@@9"} {
		if fs := configFindings(t, "app.env", text); len(fs) != 1 {
			t.Errorf("%q: %d findings, want 1", text, len(fs))
		}
	}
}

// TestKeyNameFilter pins the whole-word matching of notSecretKeyRe: the
// names on the left hold secrets although a not-secret word occurs inside
// one of their words.
func TestKeyNameFilter(t *testing.T) {
	for k, notSecret := range map[string]bool{
		"GF_SECURITY_ADMIN_PASSWORD": false, "OAUTH_REFRESH_TOKEN": false, "SERVICE_ACCOUNT_TOKEN": false,
		"MODEL_SECRET": false, "PROTOTYPE_API_KEY": false, "NAMESPACE_TOKEN": false, "ID_TOKEN": false,
		"USERNAME_PASSWORD": false, "refreshToken": false, "clientSecret": false, "AMOUNT_SECRET": false,
		"DB_PASSWORD_FILE": true, "SECRET_NAME": true, "secretRef": true, "secretKeyRef": true, "passwordFile": true,
		"passwordfile": true, "tokenurl": true, "pwdlen": true, "PASSWORD_LEN": true, "AWS_ACCESS_KEY_ID": true,
		"accessKeyId": true, "apikeyid": true, "token_ttl": true, "tokenExpiresAt": true, "TOKEN_EXPIRY": true,
		"secretNamespace": true, "PASSWORD_HASH_ALGORITHM": true, "api-key-header": true, "secret.mount.path": true,
		"existingSecret": true, "TOKEN_URLPath": true, "hashedPassword": true, "procGetTokenInformation": false, "password.toHashes": true, "passwordPolicies": true, "tokenPrefixes": true, "SECRET_NAMES": true, "PASSWORDS": false, "credential_source": true, "next_page_token": true,
		"NextToken": true, "ContinuationToken": true, "NEXTAUTH_SECRET": false, "NEXT_AUTH_SECRET": false,
	} {
		if got := notSecretKeyRe.MatchString(k); got != notSecret {
			t.Errorf("notSecretKeyRe.MatchString(%q) = %v", k, got)
		}
	}
	for k, want := range map[string]string{
		"GF_SECURITY_ADMIN_PASSWORD": "gf security admin password", "dbPasswordFile": "db password file",
		"URLPath": "url path", "accessKeyID": "access key id", "secret.key-ref": "secret key ref", "x": "x",
	} {
		if got := strings.Join(keyWords(k), " "); got != want {
			t.Errorf("keyWords(%q) = %q, want %q", k, got, want)
		}
	}
	// Through the scanner: the generic rule reports the first line and
	// still ignores the others.
	fs := configFindings(t, "grafana.env", "GF_SECURITY_ADMIN_PASSWORD=Jx2mQ8rT4zLp9WkN\n"+
		"DB_PASSWORD_FILE=/run/secrets/db-v2\nSECRET_NAME=prod-db-credentials-2\nsecretRef: pg-secret-2024")
	if len(fs) != 1 || fs[0].Line != 1 || fs[0].RuleID != "generic-secret-assignment" {
		t.Fatalf("findings %+v", fs)
	}
}

// TestDatadogKeywords: a bare "default" keyword would send every Go
// switch's default: line through the Datadog regexes.
func TestDatadogKeywords(t *testing.T) {
	s, _ := New(Options{})
	for _, id := range []string{"datadog-api-key", "datadog-app-key"} {
		for _, kw := range s.Rule(id).Keywords {
			if kw == "default" || kw == "default:" {
				t.Errorf("%s has keyword %q", id, kw)
			}
		}
	}
}

// TestInContextWindow: the window a Context check sees is the lines
// before the match, at most ContextLines of them.
func TestInContextWindow(t *testing.T) {
	data := []byte("a\nb\nc\nd\n")
	var seen string
	r := &Rule{ContextLines: 2, Context: func(_ string, before []byte, _ string) bool { seen = string(before); return true }}
	inContext(r, "p", data, 6, 0, "d")
	if seen != "b\nc\n" {
		t.Fatalf("window %q", seen)
	}
	inContext(r, "p", data, 0, 0, "a")
	if seen != "" {
		t.Fatalf("window at the first line %q", seen)
	}
	if !inContext(&Rule{}, "p", data, 2, 0, "b") {
		t.Fatal("a rule without Context must pass")
	}
}

// TestInContextKeyName: the Context check sees the match extended over the
// key name it starts inside, at the match's own offset (the same text
// earlier on the line belongs to another key), and not past the line start.
func TestInContextKeyName(t *testing.T) {
	data := []byte("x\nfoo_API_KEY=2 DD_API_KEY=2\n")
	var seen string
	r := &Rule{Context: func(_ string, _ []byte, m string) bool { seen = m; return true }}
	inContext(r, "p", data, 2, 17, "API_KEY=2")
	if seen != "DD_API_KEY=2" {
		t.Fatalf("match seen as %q", seen)
	}
	inContext(r, "p", data, 2, 0, "foo_API_KEY=2")
	if seen != "foo_API_KEY=2" {
		t.Fatalf("match at the line start seen as %q", seen)
	}
}

// TestSecretShapedCodeAndProse pins the shape filter's cases found in real
// code once the key-name filter stopped dropping RefreshToken and
// *Credentials* fields: Go addresses and dereferences, and prose.
func TestSecretShapedCodeAndProse(t *testing.T) {
	for v, want := range map[string]bool{
		"&datadogV2.SecurityMonitoringAttributes{": false, "&cachedToken.RefreshToken": false, "*cfg.Token2": false,
		"refresh token": false, "my secret value": false, "modadvapi32.NewProc": false, "kp9x.Q7mZt2": true, `\a\x82\xb5\x18\x033.0`: false,
		"datadogV1.SYNTHETICS_BASIC_AUTH_HEADER": false, "listInvConf1.NextContinuationToken": false, "ed25519.Ed25519PrivateKey": false, "../credentials/": false,
		"dGhpcyBpcyBub3QgYSByZWFsIHZhbHVl": false, "dXNlcjpTM2NyZXQtdjI=": true, "Kq7.Xz9Pm2Lw4": true,
		"Jx2mQ8rT4zLp9WkN": true, "&Jx2mQ8rT4z": false, "&7mQ8rT4zLp": true, "correct horse 42": true,
	} {
		if got := secretShaped(v); got != want {
			t.Errorf("secretShaped(%q) = %v", v, got)
		}
	}
	fs := configFindings(t, "sso_test.go", "\t\tRefreshToken: \"refresh token\",\n\t\tRefreshToken: &cachedToken.RefreshToken,")
	if len(fs) != 0 {
		t.Fatalf("findings %+v", fs)
	}
}
