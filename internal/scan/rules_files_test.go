package scan

import (
	"encoding/base64"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Near misses of the file-format rules, checked by TestRulesFalsePositives
// (Kubernetes rules are scanned as values.yaml).
var fileFalsePositives = map[string][]string{
	"htpasswd-hash": {
		"example:$apr1$@@R::A62:8@@$@@R::A62:22@@",
		"myuser:$apr1$xxxxxxxx$xxxxxxxxxxxxxxxxxxxxxx",
		"daemon:*:19724:0:99999:7:::",
		"alice:$2y$05$...",
	},
	"kubeconfig-client-key": {
		"kind: Config\nusers:\n- name: a\n  user:\n    client-key-data: <base64-encoded-client-key>",
		"kind: Config\nusers:\n- name: a\n  user:\n    client-key-data: @@B64:R:-----BEGIN CERTIFICATE-----:B64:400@@",
		"kind: Config\nusers:\n- name: a\n  user:\n    client-key-data: @@B64:R:-----BEGIN RSA PRIVATE KEY-----...-----END RSA PRIVATE KEY-----:az:1@@",
		"kind: Config\nusers:\n- name: a\n  user:\n    client-key-data: @@B64:R::az:80@@",
	},
	"kubeconfig-token": {
		"kind: Config\nusers:\n- name: a\n  user:\n    token: \"\"\n- name: b\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
		"kind: Config\nusers:\n- name: a\n  user:\n    token: abcdef.0123456789abcdef\n- name: b\n  user:\n    token: ${K8S_TOKEN}",
	},
	"kubeconfig-password": {
		"kind: Config\nusers:\n- name: a\n  user:\n    username: admin\n    password: admin\n- name: b\n  user:\n    password: REPLACE_ME",
	},
	"kubeconfig-auth-provider-secret": {
		"kind: Config\nusers:\n- name: a\n  user:\n    auth-provider:\n      name: gcp\n      config:\n        token-key: '{.credential.access_token}'\n        cmd-path: /usr/bin/gcloud",
	},
}

func init() {
	for id, fps := range fileFalsePositives {
		falsePositives[id] = fps
	}
}

// fileFindings scans text (markers expanded) as the file at path.
func fileFindings(t *testing.T, path, text string) []Finding {
	t.Helper()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s.scanText(path, []byte(newGen(path+text).expand(text)), true).findings
}

func ruleFindings(fs []Finding, rule string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.RuleID == rule {
			out = append(out, f)
		}
	}
	return out
}

// opensshKeyLines is the body of an unencrypted ed25519 key: its first line
// is the same in every such key and holds a run of A (empty cipher and kdf).
const opensshFirstLine = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"

func TestOpenSSHKeyShapes(t *testing.T) {
	body := []string{opensshFirstLine, "QyNTUxOQAAACD@@R::B64:57@@", "@@R::B64:70@@", "@@R::B64:70@@"}
	block := func(indent, sep string) string {
		return indent + opensshHeader + sep + indent + strings.Join(body, sep+indent) + sep + indent + "-----END OPENSSH PRIVATE KEY-----"
	}
	for _, c := range []struct {
		name, path, text string
		want             int
	}{
		{"file", "id_ed25519", block("", "\n"), 1},
		{"yaml block scalar", "vars.yml", "key: |\n" + block("  ", "\n"), 1},
		{"terraform heredoc", "main.tf", "k = <<-EOT\n" + block("    ", "\n") + "\n  EOT", 1},
		{"json escapes", "vars.json", `{"ssh_key": "` + block("", `\n`) + `\n"}`, 1},
		{"go concatenation", "key.go", "const k = \"" + opensshHeader + "\\n\" +\n\t\"" + strings.Join(body, "\\n\" +\n\t\"") + "\\n\"", 1},
		{"truncated", "README.md", opensshHeader + "\n" + opensshFirstLine + "\n...\n-----END OPENSSH PRIVATE KEY-----", 0},
		{"placeholder", "values.yaml", "k: |\n  " + opensshHeader + "\n  <paste your key here>\n  -----END OPENSSH PRIVATE KEY-----", 0},
		{"x body", "values.yaml", "k: |\n  " + opensshHeader + "\n  " + strings.Repeat("X", 70) + "\n  " + strings.Repeat("X", 70), 0},
		{"no body", "doc.md", "a file starting with " + opensshHeader + " and ending with the END line", 0},
		// Cut short within the lines the rule reads (header and three).
		{"cut short after a body", "README.md", opensshHeader + "\n" + strings.Join(body[:2], "\n") + "\n...\n-----END OPENSSH PRIVATE KEY-----", 0},
		{"one line only", "doc.md", opensshHeader + "\n" + opensshFirstLine + "\n-----END OPENSSH PRIVATE KEY-----", 0},
		{"public key", "id_ed25519.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI@@R::B64:43@@ me@host", 0},
	} {
		if got := len(ruleFindings(fileFindings(t, c.path, c.text), "openssh-private-key")); got != c.want {
			t.Errorf("%s: %d openssh-private-key findings, want %d", c.name, got, c.want)
		}
	}
}

func TestPEMKeyIndented(t *testing.T) {
	key := "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI@@R::B64:55@@\n@@R::B64:64@@\n-----END EC PRIVATE KEY-----"
	indent := func(s, in string) string { return in + strings.ReplaceAll(s, "\n", "\n"+in) }
	for _, c := range []struct {
		name, path, text string
		want             int
	}{
		{"yaml block scalar", "vars.yml", "key: |\n" + indent(key, "  "), 1},
		{"heredoc", "main.tf", "  k = <<-EOT\n" + indent(key, "        ") + "\n  EOT", 1},
		{"json", "k.json", `{"k": "` + strings.ReplaceAll(key, "\n", `\n`) + `"}`, 1},
		{"x body", "vars.yml", "key: |\n" + indent("-----BEGIN EC PRIVATE KEY-----\n"+strings.Repeat("X", 64)+"\n-----END EC PRIVATE KEY-----", "        "), 0},
		// Quoted line by line in code.
		{"java concatenation", "KeyFixture.java", "static final String KEY =\n      \"" + strings.ReplaceAll(key, "\n", "\\n\" +\n      \"") + "\\n\";", 1},
		{"python implicit concatenation", "fixtures.py", "KEY = (\n    \"" + strings.ReplaceAll(key, "\n", "\\n\"\n    \"") + "\\n\"\n)", 1},
		{"leading plus", "keys.js", "const key = '" + strings.ReplaceAll(key, "\n", "\\n'\n  + '") + "';", 1},
		{"quoted x body", "KeyFixture.java", "String k = \"-----BEGIN PRIVATE KEY-----\\n\" +\n  \"" + strings.Repeat("X", 64) + "\\n\";", 0},
	} {
		if got := len(ruleFindings(fileFindings(t, c.path, c.text), "private-key")); got != c.want {
			t.Errorf("%s: %d private-key findings, want %d", c.name, got, c.want)
		}
	}
}

func TestDatabaseURLPassword(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"DATABASE_URL=postgres://app:Zq8*vR2!mK@db.internal:5432/app", "Zq8*vR2!mK"},
		{"url = mongodb+srv://svc:Tk4@pL9x@Wq@cluster0.mongodb.net/app", "Tk4@pL9x@Wq"}, // the last @ before the host
		{"AMQP=amqps://o:Rt7%40Lm2Qx9@mq.internal:5671/o", "Rt7%40Lm2Qx9"},
		{"u = sqlserver://sa:Hq3#Ue8$Vb@sql.internal:1433?database=r", "Hq3#Ue8$Vb"},
		{"sqlalchemy.url = postgresql+asyncpg://al:Nv6Wq2Lp9Xc@pg/app", "Nv6Wq2Lp9Xc"},
		{"url=jdbc:postgresql://pg:5432/o?user=o&password=Fj3Kw8Qz1Lm&ssl=true", "Fj3Kw8Qz1Lm"},
		{"url=jdbc:sqlserver://sql:1433;databaseName=r;user=svc;password=Pw9Rt4Yx2Q;encrypt=true", "Pw9Rt4Yx2Q"},
		{`sql.Open("mysql", "app:Vq8r@T3kLm9Zx@tcp(db.internal:3306)/app?parseTime=true")`, "Vq8r@T3kLm9Zx"},
		{`dsn := "app:Hw5Lq2Zx8Rk@unix(/run/mysqld/mysqld.sock)/app"`, "Hw5Lq2Zx8Rk"},
		{"jdbc.url=jdbc:oracle:thin:billing/Kq7#zR2mX9@db01.internal:1521:ORCL", "Kq7#zR2mX9"},
		{`url: "jdbc:oracle:thin:etl/Wm4Lp9Zx2Qr@//exa-scan.internal:1521/DWH"`, "Wm4Lp9Zx2Qr"},
		{"sqlplus -s reporting/Hv8Qn3Lz6Tx@//db01:1521/XEPDB1 @daily.sql", "Hv8Qn3Lz6Tx"},
		{`sqlplus -L "system/Rz5Kw9Mq2Xb" @install.sql`, "Rz5Kw9Mq2Xb"},
		// CI defaults, references, masks and documentation.
		{"jdbc.url=jdbc:oracle:thin:scott/tiger@localhost:1521:XE", ""},
		{"jdbc.url=jdbc:oracle:thin:@db01.internal:1521:ORCL", ""},
		{`sqlplus -s "$DB_USER/$DB_PASS@$DB_TNS" @daily.sql`, ""},
		{"sqlplus / as sysdba", ""},
		{`sql.Open("mysql", "root:root@tcp(127.0.0.1:3306)/test")`, ""},
		{`fmt.Sprintf("%s:%s@tcp(%s)/%s", user, pass, host, db)`, ""},
		{"DATABASE_URL: postgres://postgres:postgres@localhost:5432/app_test", ""},
		{"MYSQL_URL: mysql://root:root@127.0.0.1:3306/app_test", ""},
		{"AMQP_URL: amqp://guest:guest@localhost:5672/", ""},
		{"DATABASE_URL: postgresql://keycloak:keycloak@postgres:5432/keycloak", ""},
		{"DEFAULT=postgres://app:p%40ssw0rd@db/app", ""}, // p@ssw0rd, decoded
		{"CACHE_URL=redis://:$REDIS_PASSWORD@cache:6379/0", ""},
		{"set DB=postgres://app:%DB_PASS%@db/app", ""},
		{"dsn=postgres://app:********@db.internal:5432/app", ""},
		{"dsn=amqp://orders:xxxxxx@mq.internal:5672/orders", ""},
		{"dsn=amqp://orders:***@mq.internal:5672/orders", ""},
		{"url=jdbc:postgresql://localhost/test?user=test&password=test", ""},
		{"url: postgres://app@db.internal:5432/app?password_file=/run/pw", ""},
	} {
		fs := ruleFindings(fileFindings(t, "app.env", c.line), "database-url-password")
		switch {
		case c.want == "" && len(fs) > 0:
			t.Errorf("%q: reported %q", c.line, fs[0].Secret)
		case c.want != "" && (len(fs) != 1 || fs[0].Secret != c.want):
			t.Errorf("%q: findings %+v, want secret %q", c.line, fs, c.want)
		}
	}
}

func TestHtpasswdHashes(t *testing.T) {
	for _, c := range []struct {
		name, path, text string
		want             int
	}{
		{"apr1", ".htpasswd", "ops:$apr1$@@R::A62:8@@$@@R::A62:22@@", 1},
		{"bcrypt", ".htpasswd", "ops:$2y$10$@@R::A62:53@@", 1},
		{"sha512 shadow", "shadow", "root:$6$@@R::A62:16@@$@@R::A62:86@@:19724:0:99999:7:::", 1},
		{"compose $$", "docker-compose.yml", "      - \"traefik.http.middlewares.a.basicauth.users=ops:$$apr1$$@@R::A62:8@@$$@@R::A62:22@@\"", 1},
		{"sha", ".htpasswd", "ci:{SHA}@@R::B64:27@@=", 1},
		{"go string", "users.go", `const users = "alice:$2a$10$@@R::A62:53@@\nbob:$apr1$@@R::A62:8@@$@@R::A62:22@@\n"`, 2},
		{"prometheus web config", "web.yml", "basic_auth_users:\n  admin: $2y$10$@@R::A62:53@@\n  'grafana': '$2b$12$@@R::A62:53@@'", 2},
		{"prometheus example user", "web.yml", "basic_auth_users:\n  example-user: $2y$10$@@R::A62:53@@", 0},
		{"example user", ".htpasswd", "example:$2y$10$@@R::A62:53@@", 0},
		{"example user in a string", "users.go", `users := "ops:$2y$10$@@R::A62:53@@\nsample:$2y$10$@@R::A62:53@@"`, 1},
		{"low entropy", ".htpasswd", "u:$apr1$aaaabbbb$ababababababababababab", 0},
		{"locked", "shadow", "sshd:!:19724::::::\nbin:*:19724:0:99999:7:::", 0},
		{"no user", "hash.go", `h := "$2a$10$@@R::A62:53@@"`, 0},
	} {
		if got := len(ruleFindings(fileFindings(t, c.path, c.text), "htpasswd-hash")); got != c.want {
			t.Errorf("%s: %d htpasswd-hash findings, want %d", c.name, got, c.want)
		}
	}
}

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: @@B64:R:-----BEGIN CERTIFICATE-----:B64:400@@
users:
- name: admin
  user:
    client-certificate-data: @@B64:R:-----BEGIN CERTIFICATE-----:B64:400@@
    client-key-data: @@B64:R:-----BEGIN EC PRIVATE KEY-----:B64:160@@
- name: bot
  user:
    token: @@R::A62:40@@
- name: basic
  user:
    username: admin
    password: @@R::A62:18@@
- name: sso
  user:
    auth-provider:
      name: oidc
      config:
        client-id: kubernetes
        client-secret: @@R::A62:32@@
        refresh-token: @@R::URL:64@@
        idp-issuer-url: https://sso.internal/realms/x
- name: eks
  user:
    exec:
      command: aws
      args: [eks, get-token, --cluster-name, prod]
`

func TestKubeconfig(t *testing.T) {
	want := map[string]int{"kubeconfig-client-key": 12, "kubeconfig-token": 15, "kubeconfig-password": 19,
		"kubeconfig-auth-provider-secret": 27}
	for _, path := range []string{".kube/config", "admin.conf", "prod.kubeconfig", "kubeconfig.yaml", "my-kubeconfig.txt"} {
		fs := fileFindings(t, path, testKubeconfig)
		got := map[string]int{}
		for _, f := range fs {
			if f.RuleID == "kubeconfig-auth-provider-secret" && f.Line == 26 {
				continue // client-secret
			}
			got[f.RuleID] = f.Line
		}
		for rule, line := range want {
			if got[rule] != line {
				t.Errorf("%s: %s at line %d, want %d (findings %v)", path, rule, got[rule], line, got)
			}
		}
		if len(fs) != 5 {
			t.Errorf("%s: %d findings, want 5: %+v", path, len(fs), fs)
		}
	}
	// Not a kubeconfig by name or content: no structured pass.
	if fs := fileFindings(t, "notes.txt", testKubeconfig); len(ruleFindings(fs, "kubeconfig-token")) != 0 {
		t.Errorf("notes.txt parsed as a kubeconfig: %+v", fs)
	}
	// A token given as an environment reference is not one.
	ref := "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user:\n    token: $CI_KUBERNETES_DEPLOY_TOKEN\n"
	if fs := fileFindings(t, "kubeconfig.yaml", ref); len(fs) != 0 {
		t.Errorf("token reference reported: %+v", fs)
	}
	if looksStructured("Makefile", []byte("users: x\n")) || !looksStructured("config", []byte("kind: Config\nusers: []\n")) {
		t.Error("looksStructured: kubeconfig detection by content")
	}
}

func TestKubeconfigClientKeyLine(t *testing.T) {
	key := "@@B64:R:-----BEGIN EC PRIVATE KEY-----:B64:160@@"
	for _, c := range []struct {
		name, path, text string
		want             int
	}{
		{"terraform heredoc", "main.tf", "  kubeconfig = <<-EOT\n    users:\n    - name: admin\n      user:\n        client-key-data: " + key + "\n  EOT", 1},
		{"markdown", "NOTES.md", "    client-key-data: " + key, 1},
		{"json", "out.txt", `{"users": [{"user": {"client-key-data": "` + key + `"}}]}`, 1},
		{"parsed and line, once", "admin.conf", "kind: Config\nusers:\n- name: a\n  user:\n    client-key-data: " + key, 1},
		{"certificate", "NOTES.md", "client-key-data: @@B64:R:-----BEGIN CERTIFICATE-----:B64:400@@", 0},
		{"short", "NOTES.md", "client-key-data: LS0tLS1CRUdJTi...", 0},
	} {
		if got := len(ruleFindings(fileFindings(t, c.path, c.text), "kubeconfig-client-key")); got != c.want {
			t.Errorf("%s: %d kubeconfig-client-key findings, want %d", c.name, got, c.want)
		}
	}
}

func TestKubeBlockKeyReportedOnce(t *testing.T) {
	pem := "-----BEGIN RSA PRIVATE KEY-----\n    MIIEpAIBAAKCAQEA@@R::B64:48@@\n    @@R::B64:64@@\n    -----END RSA PRIVATE KEY-----"
	for _, c := range []struct {
		name, path, text string
		line             int
	}{
		{"helm values", "values.yaml", "tls:\n  privateKey: |\n    " + pem, 3},
		{"configmap", "cm.yaml", "kind: ConfigMap\ndata:\n  private_key: |\n    " + pem, 4},
		{"stringData", "s.yaml", "kind: Secret\nstringData:\n  key.pem: |\n    " + pem, 4},
	} {
		fs := fileFindings(t, c.path, c.text)
		if len(fs) != 1 || fs[0].RuleID != "private-key" || fs[0].Line != c.line {
			t.Errorf("%s: %+v, want one private-key finding on line %d", c.name, fs, c.line)
		}
	}
}

func TestKubeconfigAuthProviderSettings(t *testing.T) {
	// token-key is a JSONPath the generic rule reads as a token.
	text := "kind: Config\nusers:\n- name: g\n  user:\n    auth-provider:\n      name: gcp\n      config:\n        token-key: '{.credential.access_token_value}'\n"
	if fs := fileFindings(t, "kubeconfig", text); len(fs) != 0 {
		t.Errorf("auth-provider settings reported: %+v", fs)
	}
}

func TestKubeconfigInSecret(t *testing.T) {
	kc := "apiVersion: v1\nkind: Config\nusers:\n- name: capi-admin\n  user:\n    token: Qm7xW2pL9vK4nR8tY3sZ6hJ1cF5dG0aB\n"
	text := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: prod-kubeconfig\ndata:\n  value: " + base64.StdEncoding.EncodeToString([]byte(kc)) + "\n"
	fs := fileFindings(t, "secret.yaml", text)
	if got := ruleFindings(fs, "kubeconfig-token"); len(got) != 1 || got[0].Line != 6 {
		t.Errorf("kubeconfig in a Secret: %+v", fs)
	}
}

func TestKubeconfigInStringData(t *testing.T) {
	text := `apiVersion: v1
kind: Secret
metadata:
  name: edge-kubeconfig
stringData:
  value: |
    apiVersion: v1
    kind: Config
    users:
    - name: admin
      user:
        token: Qm7xW2pL9vK4nR8tY3sZ6hJ1cF5dG0aB
        client-key-data: @@B64:R:-----BEGIN EC PRIVATE KEY-----:B64:160@@
`
	got := map[string]int{}
	for _, f := range fileFindings(t, "secret.yaml", text) {
		got[f.RuleID] = f.Line
	}
	if len(got) != 2 || got["kubeconfig-token"] != 12 || got["kubeconfig-client-key"] != 13 {
		t.Errorf("kubeconfig in stringData: %v, want kubeconfig-token:12 kubeconfig-client-key:13", got)
	}
}

func TestSecretPublicFields(t *testing.T) {
	cert := "-----BEGIN CERTIFICATE-----\n@@R::B64:64@@\n@@R::B64:64@@\n-----END CERTIFICATE-----\n"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(newGen(s).expand(s))) }
	for _, c := range []struct {
		name, text string
		want       int
	}{
		{"tls data", "kind: Secret\ntype: kubernetes.io/tls\ndata:\n  tls.crt: " + b64(cert) + "\n  ca.crt: " + b64(cert) + "\n  tls.key: " + b64("-----BEGIN EC PRIVATE KEY-----\n@@R::B64:64@@\n-----END EC PRIVATE KEY-----\n"), 1},
		{"tls crt holding a key", "kind: Secret\ntype: kubernetes.io/tls\ndata:\n  tls.crt: " + b64(cert+"-----BEGIN PRIVATE KEY-----\n@@R::B64:64@@\n-----END PRIVATE KEY-----\n"), 1},
		{"tls stringData key, reported once", "kind: Secret\ntype: kubernetes.io/tls\nstringData:\n  tls.key: |\n    -----BEGIN EC PRIVATE KEY-----\n    MHcCAQEEI@@R::B64:55@@\n    -----END EC PRIVATE KEY-----", 1},
		{"sa token", "kind: Secret\ntype: kubernetes.io/service-account-token\ndata:\n  ca.crt: " + b64(cert) + "\n  namespace: " + b64("kube-system"), 0},
		{"sa token stringData", "kind: Secret\ntype: kubernetes.io/service-account-token\nstringData:\n  namespace: build\n  token: @@R::A62:40@@", 1},
		{"opaque cert in stringData", "kind: Secret\ntype: Opaque\nstringData:\n  ca-bundle.pem: |\n    " + strings.ReplaceAll(strings.TrimSpace(cert), "\n", "\n    "), 0},
		{"opaque public key", "kind: Secret\ndata:\n  jwt.pub: " + b64("-----BEGIN PUBLIC KEY-----\n@@R::B64:64@@\n-----END PUBLIC KEY-----\n"), 0},
		{"opaque namespace is a value", "kind: Secret\ntype: Opaque\nstringData:\n  namespace-token: @@R::A62:24@@", 1},
		{"bootstrap token", "kind: Secret\ntype: bootstrap.kubernetes.io/token\nstringData:\n  description: \"join token for edge nodes\"\n  token-id: k3x9q2\n  token-secret: @@R::a36:16@@\n  expiration: \"2026-12-31T00:00:00Z\"\n  usage-bootstrap-authentication: \"true\"\n  auth-extra-groups: system:bootstrappers:kubeadm:default-node-token", 1},
		{"argo repository url", "kind: Secret\nstringData:\n  type: git\n  url: git@git.internal:platform/infra.git\n  username: deploy", 0},
		{"argo cluster data", "kind: Secret\ndata:\n  name: " + b64("prod-eu") + "\n  server: " + b64("https://10.0.0.1:6443"), 0},
		{"tls DER certificate", "kind: Secret\ntype: kubernetes.io/tls\ndata:\n  tls.crt: " + b64("@@R::A62:120@@") + "\n  ca.crt: " + b64("@@R::A62:120@@"), 0},
		{"opaque DER value", "kind: Secret\ntype: Opaque\ndata:\n  client.crt: " + b64("@@R::A62:120@@"), 1},
		{"sa DER ca.crt", "kind: Secret\ntype: kubernetes.io/service-account-token\ndata:\n  ca.crt: " + b64("@@R::A62:120@@"), 0},
	} {
		var n int
		for _, f := range fileFindings(t, "secret.yaml", c.text) {
			if strings.HasPrefix(f.RuleID, "k8s-secret") || f.RuleID == "private-key" {
				n++
			}
		}
		if n != c.want {
			t.Errorf("%s: %d findings, want %d", c.name, n, c.want)
		}
	}
}

func TestSealedSecretsCiphertext(t *testing.T) {
	g := newGen("sealed")
	cipher := "AgB" + g.str("B64", 741)
	for _, c := range []struct {
		name, path, text string
		want             int
	}{
		{"SealedSecret", "sealed.yaml", "kind: SealedSecret\nspec:\n  encryptedData:\n    password: " + cipher, 0},
		{"helm values", "values.yaml", "db:\n  password: " + cipher + "\n  token: " + cipher, 0},
		{"json", "sealed.json", `{"spec": {"encryptedData": {"api_token": "` + cipher + `"}}}`, 0},
		// Same shape, but the length prefix names no RSA key size.
		{"not a ciphertext", "values.yaml", "db:\n  password: AgE" + g.str("B64", 741), 1},
		{"short", "values.yaml", "db:\n  password: AgB" + g.str("A62", 40), 1},
		// Under encryptedData a value is a ciphertext by its place: a
		// hand-written one need not have a wrapped session key's length.
		{"short under encryptedData", "sealed.yaml", "kind: SealedSecret\nspec:\n  encryptedData:\n    password: AgB" + g.str("B64", 412), 0},
		{"short in values encryptedData", "values.yaml", "grafana:\n  sealed:\n    encryptedData:\n      admin-password: AgD" + g.str("B64", 520) + "==", 0},
		{"short outside encryptedData", "values.yaml", "db:\n  password: AgB" + g.str("B64", 412), 1},
		{"encryptedData, not Ag", "sealed.yaml", "kind: SealedSecret\nspec:\n  encryptedData:\n    password: Zx" + g.str("A62", 40), 1},
	} {
		if got := len(fileFindings(t, c.path, c.text)); got != c.want {
			t.Errorf("%s: %d findings, want %d", c.name, got, c.want)
		}
	}
	if !sealedSecretsCipher(cipher) || sealedSecretsCipher(cipher[:400]) {
		t.Error("sealedSecretsCipher: length check")
	}
}

// malformedKubeconfigs are documents a kubeconfig check must survive.
var malformedKubeconfigs = []string{
	"kind: Config\nusers: 3",
	"kind: Config\nusers:\n- 1\n- [a]\n- {user: 7}\n- {user: {token: [x]}}",
	"kind: Config\nusers:\n- user:\n    client-key-data: {a: b}\n    auth-provider: [x]\n    password: ~",
	"kind: Config\nusers:\n- user:\n    auth-provider:\n      config: [1, 2]\n- user:\n    auth-provider:\n      config:\n        ? [a]\n        : b",
	"kind: Config\nusers:\n- user:\n    client-key-data: \"LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t\"",
	"kind: Config\nusers: &a\n- user: *a",
	"kind: Secret\ndata:\n  value: a2luZDogQ29uZmlnCnVzZXJzOiA1",
	"kind: Secret\ntype: [x]\ndata:\n  tls.crt: {a: b}",
}

// TestMalformedKubeconfig runs the checks without scanYAML's recover, so
// a panic fails the test.
func TestMalformedKubeconfig(t *testing.T) {
	for _, in := range malformedKubeconfigs {
		checkNoPanic(t, in)
	}
}

func FuzzKubeconfig(f *testing.F) {
	for _, in := range malformedKubeconfigs {
		f.Add(in)
	}
	f.Add(testKubeconfig)
	f.Fuzz(func(t *testing.T, in string) { checkNoPanic(t, in) })
}

func checkNoPanic(t *testing.T, in string) {
	t.Helper()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := &kubeCheck{s: s, res: &scanResult{}}
	var doc yaml.Node
	if yaml.Unmarshal([]byte(in), &doc) != nil || len(doc.Content) != 1 {
		return
	}
	k.document(doc.Content[0])
	k.kubeconfig(doc.Content[0], "kubeconfig")
}
