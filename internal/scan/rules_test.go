package scan

import (
	"strings"
	"testing"

	"github.com/cofferkms/coffer/credential"
)

// falsePositives holds, for every rule, near misses it must not report:
// wrong lengths or prefixes, documented examples, placeholders, templates.
// True positives of every rule are in the corpus (TestCorpus checks that
// each rule has one).
var falsePositives = map[string][]string{
	"coffer-token":                  {"t=@@COFFERBAD@@", "t=cft_" + strings.Repeat("A", 46)},
	"coffer-access-key-secret":      {"s=@@COFFERAKBAD@@", "s=cfsk_" + strings.Repeat("A", 46)},
	"coffer-access-key-id":          {"id=cfak_" + strings.Repeat("A", 24), "id=cfak_abcdefghijklmnopqrstuvwx"},
	"alibaba-access-key-id":         {"id=LTAI@@R::A62:8@@", "x=ALTAI@@R::A62:16@@"},
	"alibaba-access-key-secret":     {"secret=@@R::A62:30@@ with no key id near"},
	"aws-access-key-id":             {"AKIAIOSFODNN7EXAMPLE", "AKIA@@R::AZ27:10@@"},
	"aws-secret-access-key":         {"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
	"aws-mws-key":                   {"amzn.mws.1234"},
	"gcp-service-account-key":       {`"private_key": "-----BEGIN PRIVATE KEY-----\n...\n"`},
	"gcp-api-key":                   {"AIza@@R::A62:20@@"},
	"gcp-oauth-client-secret":       {"GOCSPX-short"},
	"azure-storage-account-key":     {"AccountKey=@@R::B64:20@@=="},
	"azure-client-secret":           {"version 1Q~ of the doc"},
	"azure-sas-token":               {"https://a.blob.core.windows.net/c?sig=short"},
	"digitalocean-token":            {"dop_v1_@@R::hex:32@@"},
	"heroku-api-key":                {"request_id = @@UUID@@"},
	"private-key":                   {"-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----"},
	"openssh-private-key":           {"-----BEGIN OPENSSH PRIVATE KEY-----\n<redacted>"},
	"pgp-private-key":               {"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n(key goes here)"},
	"pkcs12-file":                   {"the file is keystore.p12.md"},
	"jwt":                           {"eyJub3RhIjoiand0In0.eyJub3RhIjoiand0In0.c2lnbmF0dXJlc2lnbmF0dXJl"},
	"github-pat":                    {"ghp_@@R::A62:20@@", "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},
	"github-oauth-token":            {"gho_@@R::A62:30@@"},
	"github-app-token":              {"ghs_@@R::A62:12@@"},
	"github-refresh-token":          {"ghr_@@R::A62:20@@"},
	"github-fine-grained-pat":       {"github_pat_@@R::A62:40@@"},
	"gitlab-pat":                    {"glpat-short"},
	"gitlab-pipeline-trigger-token": {"glptt-@@R::hex:20@@"},
	"gitlab-runner-token":           {"glrt-short"},
	"slack-bot-token":               {"xoxb-not-a-token"},
	"slack-user-token":              {"xoxp-1-2-3"},
	"slack-app-token":               {"xapp-1-abc"},
	"slack-webhook-url":             {"https://hooks.slack.com/services/T000/B000/XXXX"},
	"discord-webhook-url":           {"https://discord.com/api/webhooks/123/abc"},
	"telegram-bot-token":            {"time 12:AA"},
	"stripe-secret-key":             {"sk_test_@@R::A62:24@@", "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx"},
	"stripe-restricted-key":         {"rk_test_@@R::A62:24@@"},
	"square-access-token":           {"sq0atp-short"},
	"square-oauth-secret":           {"sq0csp-short"},
	"shopify-token":                 {"shpat_@@R::hex:10@@"},
	"sendgrid-api-key":              {"SG.short.short"},
	"mailgun-api-key":               {"mailgun_domain = key-value.example"},
	"openai-api-key":                {"sk-@@R::A62:48@@"},
	"anthropic-api-key":             {"sk-ant-api03-short"},
	"huggingface-token":             {"hf_@@R::az:10@@"},
	"databricks-token":              {"dapi@@R::hex:16@@"},
	"grafana-service-account-token": {"glsa_short_1234"},
	"linear-api-key":                {"lin_api_short"},
	"npm-token":                     {"npm_@@R::A62:20@@", "npm_config_cache=/tmp"},
	"pypi-token":                    {"pypi-AgEIcHlwaS5vcmc"},
	"dockerhub-pat":                 {"dckr_pat_short"},
	"docker-config-auth":            {`"auth": "bm90LWEtcGFpcg=="`},
	"hashicorp-vault-token":         {"hvs.short"},
	"terraform-cloud-token":         {"abc.atlasv1.def"},
	"database-url-password":         {"postgres://user:${DB_PASS}@db/app", "mysql://root:password@localhost/db", "postgres://u:@@R::A62:12@@@db.example.com/x"},
	"url-credentials":               {"https://user:{{ .Values.pass }}@git.internal/x"},
	"generic-secret-assignment":     {"password = os.Getenv(\"PW\")", "secret_name = \"db-credentials\"", "token_ttl = 3600", "password: ENC[coffer:v1,@@R::B64:40@@]"},
	"k8s-secret-data":               {"apiVersion: v1\nkind: Secret\ndata:\n  password: ENC[coffer:v1,@@R::B64:40@@]\n  empty: \"\""},
	"k8s-secret-stringdata":         {"apiVersion: v1\nkind: Secret\nstringData:\n  password: \"{{ .Values.pw }}\""},
	"k8s-configmap-secret":          {"apiVersion: v1\nkind: ConfigMap\ndata:\n  SECRET_NAME: db-credentials\n  PASSWORD_FILE: /run/secrets/pw"},
	"k8s-env-literal-secret":        {"kind: Pod\nspec:\n  containers:\n  - env:\n    - name: DB_PASSWORD\n      valueFrom: {secretKeyRef: {name: db, key: pw}}\n    - name: TOKEN_URL\n      value: https://x/token"},
	"helm-values-secret":            {"db:\n  password: \"\"\n  existingSecret: db\n  passwordKey: pw"},
}

func TestRulesFalsePositives(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Rules()); n < 40 {
		t.Errorf("%d rules, want at least 40", n)
	}
	for _, r := range s.Rules() {
		fps := falsePositives[r.ID]
		if len(fps) == 0 {
			t.Errorf("rule %s has no false-positive test", r.ID)
		}
		for i, fp := range fps {
			text := newGen(r.ID).expand(fp)
			path := "fp.txt"
			if r.Kube {
				path = "values.yaml"
			}
			for _, f := range s.scanText(path, []byte(text+"\n"), true).findings {
				if f.RuleID == r.ID {
					t.Errorf("rule %s reported false positive %d: %q", r.ID, i, text)
				}
			}
		}
	}
}

func TestPathRule(t *testing.T) {
	s, _ := New(Options{})
	fs := s.finish("certs/client.p12", s.pathFindings("certs/client.p12"))
	if len(fs) != 1 || fs[0].RuleID != "pkcs12-file" {
		t.Fatalf("findings %+v", fs)
	}
}

func TestCofferTokenTable(t *testing.T) {
	// The Coffer rules come from credential.Formats: one per kind, and
	// every credential that grants access by itself is critical.
	s, _ := New(Options{})
	for _, f := range credential.Formats() {
		r := s.Rule(cofferRuleIDs[f.Kind])
		if r == nil || r.Validate == nil || (f.Secret && r.Severity != Critical) {
			t.Fatalf("rule for %s: %+v", f.Prefix, r)
		}
	}
}
