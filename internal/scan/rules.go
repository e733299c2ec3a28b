package scan

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/cofferkms/coffer/credential"
)

// Severity ranks a rule's findings.
type Severity string

// Severities, most urgent first.
const (
	Critical Severity = "critical"
	High     Severity = "high"
	Medium   Severity = "medium"
	Low      Severity = "low"
)

// Rule priorities: when two findings cover the same secret on the same
// line, the one from the rule with the lower priority is kept.
const (
	prioSpecific = 0 // a known token format
	prioKube     = 1 // a Kubernetes-aware check
	prioGeneric  = 2 // a keyword + entropy heuristic
)

// A Rule recognises one kind of secret in a line of text.
//
// A line reaches Regex only when it contains one of Keywords (lower case,
// matched case-insensitively by the prefilter). Rules without a Regex are
// checks of another kind (path rules, Kubernetes checks) listed here so that
// they have an id, a description and a severity in reports.
type Rule struct {
	ID          string
	Description string
	Severity    Severity
	Keywords    []string
	Regex       *regexp.Regexp
	// Groups are the submatches that hold the secret; the first non-empty
	// one is taken. Empty means the whole match.
	Groups []int
	// MinEntropy is the minimum Shannon entropy (bits per byte) of the secret.
	MinEntropy float64
	// Validate, when set, must accept the secret (a checksum, a decoded
	// header) for a match to count.
	Validate func(secret string) bool
	// Generic rules apply the stopword and shape filters of heuristics.
	Generic bool
	// Exclude drops a match when it matches the whole matched text.
	Exclude *regexp.Regexp
	// FollowLines extends the secret with up to this many following lines
	// (the body of a PEM block), which Validate then sees.
	FollowLines int
	// Near names a rule that must match within NearLines lines for a match
	// of this rule to count (a secret key next to its key id).
	Near      string
	NearLines int
	// Context, when set, must accept a match given the file's path, the
	// up to ContextLines lines before the match's line and the matched
	// text (the Terraform block or .netrc machine a value belongs to; see
	// rules_vendor.go).
	Context      func(path string, before []byte, match string) bool
	ContextLines int
	// Path, for a path rule, matches the file's slash-separated path.
	Path *regexp.Regexp
	// Kube marks a rule implemented by the YAML checks.
	Kube bool

	priority int
}

// cofferRuleIDs names the scanner rule of each Coffer credential kind;
// the formats themselves come from credential.Formats, so a new kind needs
// one line here.
var cofferRuleIDs = map[string]string{
	credential.KindToken:           "coffer-token",
	credential.KindAccessKeySecret: "coffer-access-key-secret",
	credential.KindAccessKeyID:     "coffer-access-key-id",
}

// secretWords are the key names that mark a value as secret in
// assignments, ConfigMaps, env vars and Helm values.
const secretWords = `password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth[_-]?key`

var (
	secretKeyRe = regexp.MustCompile(`(?i)(?:` + secretWords + `)`)
	// notSecretKeyRe marks key names whose values name or point at a
	// secret rather than hold one (see keyNameFilter).
	notSecretKeyRe = keyNameFilter{}
)

// builtinRules returns the rules every scanner starts with.
func builtinRules() []*Rule {
	r := []*Rule{}
	for _, f := range credential.Formats() {
		prefix, sev := f.Prefix, Critical
		if !f.Secret {
			sev = Medium // an access key id identifies; it grants nothing alone
		}
		r = append(r, &Rule{
			ID: cofferRuleIDs[f.Kind], Description: f.Description + " (checksum verified)", Severity: sev,
			Keywords: []string{prefix + "_"},
			Regex:    regexp.MustCompile(regexp.QuoteMeta(prefix) + `_[` + f.BodyChars + `]{` + itoa(f.BodyLen) + `}`),
			Validate: func(s string) bool { return credential.Valid(prefix, s) },
		})
	}
	sp := func(id, desc string, sev Severity, kw []string, re string, groups ...int) *Rule {
		return &Rule{ID: id, Description: desc, Severity: sev, Keywords: kw, Regex: regexp.MustCompile(re), Groups: groups}
	}
	r = append(r,
		// Cloud providers.
		sp("alibaba-access-key-id", "Alibaba Cloud AccessKey ID", High, []string{"ltai"}, `\b(LTAI[A-Za-z0-9]{12,20})\b`, 1),
		// The secret under any name with "secret" (accessKeySecret,
		// ALIBABA_CLOUD_ACCESS_KEY_SECRET, setAccessKeySecret("..."),
		// tea.String("...")) or as the argument after the id
		// (NewClientWithAccessKey(region, "LTAI...", "...")).
		withValidate(withNear(sp("alibaba-access-key-secret", "Alibaba Cloud AccessKey secret next to its AccessKey ID", Critical,
			[]string{"secret", "ltai"}, `(?i)secret[\w.-]*(?:["']?\s*(?::=|=>|=|:)\s*(?:[\w.]+\(\s*)?["']?|\(\s*["'])([A-Za-z0-9]{30})\b`+
				`|\bLTAI[A-Za-z0-9]{12,20}["']\s*,\s*["']([A-Za-z0-9]{30})["']`, 1, 2), "alibaba-access-key-id", 5), alibabaSecret),
		sp("aws-access-key-id", "AWS access key ID", High, []string{"akia", "asia", "abia", "acca", "a3t"},
			`\b((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16})\b`, 1),
		// aws_secret_access_key = ..., also JSON-escaped (\"...\" in a
		// notebook's source lines), os.environ["..."] = ..., a quoted name
		// and its value as arguments (os.Setenv("AWS_SECRET_ACCESS_KEY",
		// "..."), System.setProperty("aws.secretKey", ...)), the SDKs'
		// SecretAccessKey/secretAccessKey fields and the static credential
		// constructors with the secret as second argument (Go's
		// NewStaticCredentials[Provider], Java's BasicAWSCredentials and
		// SDK v2's AwsBasicCredentials.create: any ...Credentials( call,
		// found by the keywords; case-sensitive and
		// without alternatives, it keeps the regex cheap on "aws" lines).
		withEntropy(sp("aws-secret-access-key", "AWS secret access key", Critical,
			[]string{"aws", "secretaccesskey", "secret_access_key", "newstaticcredentials", "basicsessioncredentials"},
			`(?i)(?:aws[\w.-]{0,30}(?:secret|key)[\w.-]{0,20}|\bsecret_?access_?key)(?:(?:\\?["'])?\]?\s*(?::=|=>|=|:)|\\?["']\s*,)\s*(?:\\?["'])?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)`+
				`|(?-i:Credentials(?:Provider)?(?:\.create)?\([^,()]{1,80},\s*\\?["']([A-Za-z0-9/+]{40})\\?["'])`, 1, 2), 3.5),
		sp("aws-mws-key", "Amazon MWS auth token", High, []string{"amzn.mws."}, `amzn\.mws\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`),
		sp("gcp-service-account-key", "Google Cloud service account private key (JSON key file)", Critical, []string{"private_key"},
			`"private_key"\s*:\s*"(-----BEGIN[A-Z ]*PRIVATE KEY-----[^"]{40,})"`, 1),
		sp("gcp-api-key", "Google API key", High, []string{"aiza"}, `\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)`, 1),
		sp("gcp-oauth-client-secret", "Google OAuth client secret", High, []string{"gocspx-"}, `GOCSPX-[A-Za-z0-9_-]{28}`),
		sp("azure-storage-account-key", "Azure storage account key", Critical, []string{"accountkey"}, `(?i)AccountKey=([A-Za-z0-9+/]{86}==)`, 1),
		sp("azure-client-secret", "Azure AD (Entra ID) client secret", Critical, []string{"q~"},
			`(?:^|[^A-Za-z0-9_~.-])([A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34})(?:[^A-Za-z0-9_~.-]|$)`, 1),
		sp("azure-sas-token", "Azure shared access signature", High, []string{"sig="},
			`(?i)[?&]sv=\d{4}-\d\d-\d\d[^\s"'<>]*&sig=([A-Za-z0-9%+/=]{30,})`, 1),
		sp("digitalocean-token", "DigitalOcean personal access token", High, []string{"dop_v1_", "doo_v1_", "dor_v1_"}, `\bdo[opr]_v1_[a-f0-9]{64}\b`),
		// A UUID under a Heroku key or token name (not HEROKU_APP_ID), the
		// password of a .netrc entry for api.heroku.com or git.heroku.com
		// (reported here rather than as netrc-password), or a v2 HRKU- key.
		withContext(sp("heroku-api-key", "Heroku API key", High, []string{"heroku", "password", "hrku-aa"},
			`(?i)heroku[\w.-]*?(?:key|token|auth|pass(?:word)?|secret)["']?\s*(?::=|=>|=|:)\s*["']?(`+uuidRe+`)\b`+
				`|(?:\bmachine\s+(?:api|git)\.heroku\.com\s.*?)?\bpassword\s+(`+uuidRe+`)(?:\s|$)`+
				`|\b(HRKU-AA[0-9A-Za-z_-]{58})(?:[^0-9A-Za-z_-]|$)`, 1, 2, 3), herokuContext, 6),

		// Keys and signed tokens.
		withFollow(sp("private-key", "Private key (PEM)", Critical, []string{"private key-----"},
			`-----BEGIN (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----`), 3, pemBody),
		withFollow(sp("openssh-private-key", "OpenSSH private key", Critical, []string{"openssh private key"},
			`-----BEGIN OPENSSH PRIVATE KEY-----`), 3, opensshBody), // indented, quoted or \n-escaped bodies (rules_files.go)
		withFollow(sp("pgp-private-key", "PGP private key block", Critical, []string{"pgp private key block"},
			`-----BEGIN PGP PRIVATE KEY BLOCK-----`), 4, pemBody),
		&Rule{ID: "pkcs12-file", Description: "PKCS#12 key store file (.p12/.pfx)", Severity: High, Path: regexp.MustCompile(`(?i)\.(?:p12|pfx)$`)},
		&Rule{ID: "jwt", Description: "JSON Web Token (header decoded)", Severity: Medium, Keywords: []string{"eyj"},
			Regex:    regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`),
			Validate: validJWT},

		// Source hosting and CI.
		sp("github-pat", "GitHub personal access token", Critical, []string{"ghp_"}, `\bghp_[A-Za-z0-9]{36}\b`),
		sp("github-oauth-token", "GitHub OAuth access token", Critical, []string{"gho_"}, `\bgho_[A-Za-z0-9]{36}\b`),
		sp("github-app-token", "GitHub App user-to-server or installation token", Critical, []string{"ghu_", "ghs_"}, `\bgh[us]_[A-Za-z0-9]{36}\b`),
		sp("github-refresh-token", "GitHub refresh token", Critical, []string{"ghr_"}, `\bghr_[A-Za-z0-9]{36,76}\b`),
		sp("github-fine-grained-pat", "GitHub fine-grained personal access token", Critical, []string{"github_pat_"}, `\bgithub_pat_[A-Za-z0-9_]{82}\b`),
		sp("gitlab-pat", "GitLab personal access token", Critical, []string{"glpat-"}, `\bglpat-[A-Za-z0-9_-]{20,}`),
		sp("gitlab-pipeline-trigger-token", "GitLab pipeline trigger token", High, []string{"glptt-"}, `\bglptt-[0-9a-f]{40}\b`),
		sp("gitlab-runner-token", "GitLab runner authentication token", High, []string{"glrt-"}, `\bglrt-[A-Za-z0-9_-]{20,}`),

		// Chat and messaging.
		sp("slack-bot-token", "Slack bot token", High, []string{"xoxb-"}, `\bxoxb-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24,34}\b`),
		sp("slack-user-token", "Slack user or legacy token", High, []string{"xoxp-", "xoxe-", "xoxa-", "xoxs-"}, `\bxox[peas]-(?:[0-9]{10,13}-){2,3}[A-Za-z0-9]{24,64}\b`),
		sp("slack-app-token", "Slack app-level token", High, []string{"xapp-"}, `\bxapp-\d-[A-Z0-9]{9,12}-\d{10,14}-[a-f0-9]{60,70}\b`),
		sp("slack-webhook-url", "Slack incoming webhook URL", Medium, []string{"hooks.slack.com"},
			`https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]{8,12}/[AB][A-Z0-9]{8,12}/[A-Za-z0-9]{23,34}`),
		sp("discord-webhook-url", "Discord webhook URL", Medium, []string{"discord"},
			`https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{17,20}/[A-Za-z0-9_-]{60,70}`),
		sp("telegram-bot-token", "Telegram bot token", High, []string{":aa"}, `\b\d{8,10}:AA[0-9A-Za-z_-]{33}\b`),

		// Payments and SaaS.
		sp("stripe-secret-key", "Stripe live secret key", Critical, []string{"sk_live_"}, `\bsk_live_[0-9a-zA-Z]{24,99}\b`),
		sp("stripe-restricted-key", "Stripe live restricted key", High, []string{"rk_live_"}, `\brk_live_[0-9a-zA-Z]{24,99}\b`),
		sp("square-access-token", "Square access token", High, []string{"sq0atp-"}, `\bsq0atp-[0-9A-Za-z_-]{22}\b`),
		sp("square-oauth-secret", "Square OAuth secret", High, []string{"sq0csp-"}, `\bsq0csp-[0-9A-Za-z_-]{43}\b`),
		sp("shopify-token", "Shopify access token or shared secret", High, []string{"shpat_", "shpss_", "shpca_", "shppa_"}, `\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}\b`),
		sp("sendgrid-api-key", "SendGrid API key", High, []string{"sg."}, `\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b`),
		// Mailgun's key-<32 hex> under any name (MG_KEY=, {key: '...'}),
		// as a value: not inside a word or path (cache-key-<md5>,
		// s3://b/key-<hex>), not under a hash-like name, random hex only.
		&Rule{ID: "mailgun-api-key", Description: "Mailgun API key (key- and 32 hex)", Severity: High, Keywords: []string{"key-"},
			Regex:  regexp.MustCompile(`(?:^|[^\w./:-])(?:[A-Za-z_][\w.-]*(?:\s*(?::=|=>|=)\s*|["']\s*:\s*|:\s+))?["'\x60]?(key-[0-9a-f]{32})(?:[^\w-]|$)`),
			Groups: []int{1}, Validate: hexTail(4, 3.0),
			Exclude: regexp.MustCompile(`(?i)cache|hash|md5|sha\d|etag|digest|checksum|idempot|lock|nonce|session|request|trace|uuid|fingerprint|signature|salt|object|bucket|path|file|name|_id\b|\bid\b`)},
		sp("openai-api-key", "OpenAI API key", Critical, []string{"t3blbkfj"}, `\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}\b`),
		sp("anthropic-api-key", "Anthropic API key", Critical, []string{"sk-ant-"}, `\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,100}AA\b`),
		sp("huggingface-token", "Hugging Face access token", High, []string{"hf_"}, `\bhf_[A-Za-z]{34}\b`),
		sp("databricks-token", "Databricks API token", High, []string{"dapi"}, `\bdapi[a-f0-9]{32}(?:-\d)?\b`),
		sp("grafana-service-account-token", "Grafana service account token", High, []string{"glsa_"}, `\bglsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}\b`),
		sp("linear-api-key", "Linear API key", Medium, []string{"lin_api_"}, `\blin_api_[A-Za-z0-9]{40}\b`),

		// Package registries and infrastructure.
		sp("npm-token", "npm access token", Critical, []string{"npm_"}, `\bnpm_[A-Za-z0-9]{36}\b`),
		sp("pypi-token", "PyPI upload token", Critical, []string{"pypi-ageichlwas5vcmc"}, `\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}`),
		sp("dockerhub-pat", "Docker Hub personal access token", High, []string{"dckr_pat_"}, `\bdckr_pat_[A-Za-z0-9_-]{27}\b`),
		&Rule{ID: "docker-config-auth", Description: "Registry credentials in a Docker config (auth is user:password in base64)", Severity: High,
			Keywords: []string{`"auth"`}, Regex: regexp.MustCompile(`"auth"\s*:\s*"([A-Za-z0-9+/=]{8,})"`), Groups: []int{1},
			Validate: validDockerAuth},
		sp("hashicorp-vault-token", "HashiCorp Vault service token", Critical, []string{"hvs."}, `\bhvs\.[A-Za-z0-9_-]{90,}`),
		sp("terraform-cloud-token", "Terraform Cloud / HCP Terraform API token", High, []string{"atlasv1"}, `\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}\b`),

		// Connection strings.
		&Rule{ID: "database-url-password", Description: "Database connection URL with a password", Severity: High,
			// The password runs to the last @ before the host (an unencoded
			// @ in a password); SQLAlchemy drivers (postgresql+asyncpg) and
			// JDBC URLs with a password parameter and Go MySQL DSNs
			// (user:password@tcp(host:3306)/db) count too, as do Oracle's
			// user/password@ logins (jdbc:oracle:thin:scott/...@host:1521:SID,
			// sqlplus app/...@//db:1521/XE).
			Keywords: []string{"://", "jdbc:", "@tcp(", "@unix(", "sqlplus"},
			Regex: regexp.MustCompile(`(?i)\b(?:(?:postgres(?:ql)?|mysql|mariadb|mongodb|rediss?|amqps?|mssql|sqlserver|cockroachdb|clickhouse|oracle)(?:\+\w+)?://[^\s:/@"'<>]{0,100}:([^\s/"'<>]{1,200})@[^\s@/"'<>]+` +
				`|\bjdbc:[a-z0-9]+:[^\s"'<>]*?[?&;]password=([^\s&;"'<>]+)` +
				"|[^\\s:/@\"'<>`(),]{1,64}:([^\\s/\"'<>`]{1,200})@(?:tcp|unix)\\(" +
				`|\bjdbc:oracle:(?:thin|oci8?):[^\s/@:"'<>]{1,64}/([^\s"'<>]{1,200})@` +
				`|\bsqlplus\s+(?:-\S+\s+)*["']?[^\s/@"'<>-][^\s/@"'<>]{0,63}/([^\s@"'<>/]{1,200})(?:@|["']?(?:\s|$)))`),
			Groups: []int{1, 2, 3, 4, 5}, Generic: true, Validate: validDatabaseURLPassword,
			Exclude: regexp.MustCompile(`(?i)@(?:[a-z0-9.-]*\.)?example\.(?:com|org|net)`)},
		&Rule{ID: "url-credentials", Description: "URL with an embedded password", Severity: Medium, Keywords: []string{"://"},
			Regex:  regexp.MustCompile(`(?i)\b(?:https?|ftps?|smtps?|ldaps?|git|ssh)://[^\s:/@"'<>]{1,100}:([^\s@/"'<>]{3,200})@[A-Za-z0-9.-]+`),
			Groups: []int{1}, Generic: true,
			Exclude: regexp.MustCompile(`(?i)@(?:[a-z0-9.-]*\.)?example\.(?:com|org|net)`)},

		// Heuristic.
		&Rule{ID: "generic-secret-assignment", Description: "Secret-looking value assigned to a password, secret, token or API key", Severity: Medium,
			Keywords: []string{"password", "passwd", "passphrase", "pwd", "secret", "token", "api_key", "api-key", "apikey",
				"access_key", "access-key", "accesskey", "private_key", "private-key", "privatekey", "credential", "auth_key", "authkey", "auth-key"},
			Regex:  regexp.MustCompile(`(?i)([\w.-]*(?:` + secretWords + `)[\w.-]*)["']?\s*(?::=|=>|=|:)\s*(?:"([^"\r\n]{8,200})"|'([^'\r\n]{8,200})'|([^\s"'\x60,;(){}\[\]]{8,200}))`),
			Groups: []int{2, 3, 4}, Generic: true, MinEntropy: 3.0},
	)
	r = append(r, vendorRules()...) // context-checked vendor tokens (rules_vendor.go)
	// Kubernetes-aware checks (see kube.go).
	r = append(r,
		&Rule{ID: "k8s-secret-data", Description: "Kubernetes Secret with a real value in data (base64 is not encryption)", Severity: High, Kube: true},
		&Rule{ID: "k8s-secret-stringdata", Description: "Kubernetes Secret with a plaintext value in stringData", Severity: High, Kube: true},
		&Rule{ID: "k8s-configmap-secret", Description: "ConfigMap key or value that looks secret", Severity: Medium, Kube: true},
		&Rule{ID: "k8s-env-literal-secret", Description: "Literal secret in a container env value (use valueFrom.secretKeyRef)", Severity: High, Kube: true},
		&Rule{ID: "helm-values-secret", Description: "Secret-looking value in a Helm values file", Severity: Medium, Kube: true},
	)
	for _, rule := range r {
		switch {
		case rule.Kube:
			rule.priority = prioKube
		case rule.Generic:
			rule.priority = prioGeneric
		default:
			rule.priority = prioSpecific
		}
	}
	r = append(r, fileRules()...)      // htpasswd hashes and kubeconfig checks (rules_files.go) set their own priority
	return append(r, configRules()...) // config-file passwords (rules_config.go) set their own priority
}

func withNear(r *Rule, near string, lines int) *Rule  { r.Near, r.NearLines = near, lines; return r }
func withEntropy(r *Rule, e float64) *Rule            { r.MinEntropy = e; return r }
func withValidate(r *Rule, v func(string) bool) *Rule { r.Validate = v; return r }
func withContext(r *Rule, c func(string, []byte, string) bool, lines int) *Rule {
	r.Context, r.ContextLines = c, lines
	return r
}
func withFollow(r *Rule, n int, v func(string) bool) *Rule {
	r.FollowLines, r.Validate = n, v
	return r
}

// The body may be indented (a YAML block scalar, a heredoc), follow a
// \n escape (a JSON or YAML double-quoted string) or be quoted line by line
// in code ("MIIE...\n" + in Java, implicit concatenation in Python, + "..."
// at the start of a continued line).
var pemBodyRe = regexp.MustCompile(`(?:^|\n|\\n)[ \t]*(?:\+[ \t]*)?["'\x60]?[A-Za-z0-9+/=]{40,}`)

// pemBody accepts a PEM header only when key material follows it, so that
// documentation mentioning "-----BEGIN PRIVATE KEY-----" is not a finding.
func pemBody(s string) bool { return pemBodyRe.MatchString(s) }

// validJWT accepts a JWT whose header decodes to a JSON object with "alg".
func validJWT(s string) bool {
	head, _, _ := strings.Cut(s, ".")
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(head, "="))
	if err != nil {
		return false
	}
	var h map[string]any
	if json.Unmarshal(b, &h) != nil {
		return false
	}
	_, ok := h["alg"]
	return ok
}

// validDockerAuth accepts base64 of "user:password" with a non-empty,
// non-placeholder password.
func validDockerAuth(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(b), ":")
	return ok && user != "" && len(pass) >= 4 && !isPlaceholder(pass)
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
