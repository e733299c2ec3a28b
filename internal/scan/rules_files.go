package scan

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"strings"
)

// File formats and Kubernetes credentials: password hashes in htpasswd
// and shadow files, OpenSSH private keys wherever they are pasted (YAML
// block scalars, heredocs, JSON strings), database URLs, and the
// credentials of kubeconfig files (checked on the parsed YAML, see
// kube.go). The line rules here set their own priority, like the config
// rules: builtinRules appends them after assigning the others'.

// htpasswdHashRe matches user:hash where hash is one of the crypt formats
// Apache's htpasswd and Linux shadow files use: apr1 (MD5), bcrypt,
// md5/sha256/sha512-crypt, yescrypt and {SHA}. A hash ends at a word
// boundary, a quote, a \n escape or shadow's :lastchange:min:max... fields,
// not inside a longer token.
// Docker Compose doubles every $ in labels, so $$ is accepted too. The
// YAML map form of Prometheus' and Alertmanager's web config
// (basic_auth_users: {admin: $2y$...}) puts a space, maybe a quote, after
// the colon.
var htpasswdHashRe = regexp.MustCompile(`(?:^|[\s"'=,\[\\-])[A-Za-z0-9._@-]{1,64}["']?:(?:[ \t]+["']?)?(` +
	`\$\$?apr1\$\$?[./0-9A-Za-z]{1,8}\$\$?[./0-9A-Za-z]{22}` +
	`|\$\$?2[abxy]\$\$?\d\d\$\$?[./A-Za-z0-9]{53}` +
	`|\$\$?[156]\$\$?(?:rounds=\d{1,9}\$\$?)?[./0-9A-Za-z]{1,16}\$\$?[./0-9A-Za-z]{22,86}` +
	`|\$\$?y\$\$?[./0-9A-Za-z]{1,20}\$\$?[./0-9A-Za-z]{1,86}\$\$?[./0-9A-Za-z]{43}` +
	`|\{SHA\}[A-Za-z0-9+/]{27}=)(?:\b|$|["'\s,;:)\]\\])`)

// htpasswdExampleUserRe marks an entry whose user name says it is an
// example (documentation shows "example:$apr1$...").
var htpasswdExampleUserRe = regexp.MustCompile(`(?i)^[^:]*(?:example|sample|placeholder|dummy)[^:]*:`)

// validCryptHash accepts a hash whose salt and digest look generated: a
// documentation stand-in ($apr1$salt$xxxxxxxx..., repeated characters)
// has low entropy.
func validCryptHash(h string) bool {
	h = strings.ReplaceAll(h, "$$", "$")
	body := h[strings.LastIndexByte(h, '$')+1:]
	if strings.HasPrefix(h, "{SHA}") {
		body = h[5:]
	}
	return entropy(body) >= 3.5 && !hasStopword(body, []string{"xxxx", "...."})
}

// validDatabaseURLPassword accepts the password of a database URL unless
// it is a CI or image default (postgres, root, password, ...), a short
// lower-case word (app:app, dev:devpass: the passwords of local and CI
// service containers), an environment reference ($DB_PASS, %DB_PASS%) or
// a mask. Percent-encoded passwords are judged decoded.
func validDatabaseURLPassword(p string) bool {
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	if p == "" || defaultPasswords[strings.ToLower(p)] || envRefRe.MatchString(p) {
		return false
	}
	if len(p) < 12 && strings.Trim(p, "abcdefghijklmnopqrstuvwxyz") == "" {
		return false
	}
	return strings.Trim(p, "*xX") != ""
}

// envRefRe is a whole-value environment variable reference.
var envRefRe = regexp.MustCompile(`^(?:\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%)$`)

// opensshHeader starts an OpenSSH private key block.
const opensshHeader = "-----BEGIN OPENSSH PRIVATE KEY-----"

// opensshBody accepts an OpenSSH private key header followed by key
// material: at least 100 base64 characters before the END line, however
// the block is pasted (indented in YAML or a heredoc, with \n escapes in
// JSON, quoted and concatenated in code). A body cut short with "..." or
// a <placeholder> is documentation, not a key.
func opensshBody(s string) bool {
	s = strings.TrimPrefix(s, opensshHeader)
	s = strings.ReplaceAll(s, `\n`, "\n")
	n := 0
	for _, l := range strings.Split(s, "\n") {
		l = strings.Trim(l, " \t\r\"'`+,\\|")
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "-----END") {
			break
		}
		if strings.Contains(l, "...") || strings.Contains(l, "…") || strings.ContainsAny(l, "<>") {
			return false
		}
		if strings.Trim(l, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != "" {
			break
		}
		if len(l) >= 8 && strings.Count(l, l[:1]) == len(l) {
			return false // XXXXXXXX...
		}
		n += len(l)
	}
	return n >= 100
}

// placeholderView is the part of a secret that the generic placeholder
// test judges. An OpenSSH key body legitimately holds long runs of A
// (the empty cipher and kdf fields of openssh-key-v1), so for that rule
// only the header is judged: opensshBody checks the body itself. A PEM
// block followed over several lines is judged without its indentation
// (the spaces before a key in a YAML block scalar or a heredoc are not a
// run of one character).
func placeholderView(r *Rule, secret string) string {
	if r.ID == "openssh-private-key" && strings.HasPrefix(secret, opensshHeader) {
		return opensshHeader
	}
	if r.FollowLines > 0 {
		return strings.Join(strings.Fields(secret), "\n")
	}
	if r.ID == "wordpress-auth-key" && !templateRefRe.MatchString(secret) {
		// WordPress draws its keys from an alphabet with $ and braces, so
		// "${" or "{{" inside one is chance (about one key in seventy),
		// not a template; a real reference is still judged as one.
		return strings.NewReplacer("${", "$", "{{", "{").Replace(secret)
	}
	return secret
}

// templateRefRe is a template reference inside a value: ${NAME},
// ${NAME:-default}, {{ expression }}.
var templateRefRe = regexp.MustCompile(`\$\{[A-Za-z_][\w.:]*(?::?-[^}]*)?\}|\{\{[^{}]*\}\}`)

// Sealed-secrets (Bitnami) ciphertexts: base64 of a 2-byte big-endian
// length of the RSA-OAEP encrypted session key, that key, then the
// AES-GCM sealed value. They are public by design.
var sealedCipherRe = regexp.MustCompile(`^Ag[A-D][A-Za-z0-9+/]{300,}={0,2}$`)

// sealedSecretsCipher reports whether v is a sealed-secrets ciphertext:
// after the length prefix, long enough to hold the wrapped session key
// and a GCM tag.
func sealedSecretsCipher(v string) bool {
	v = strings.Join(strings.Fields(v), "")
	if !sealedCipherRe.MatchString(v) {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "=")); err != nil {
			return false
		}
	}
	n := int(b[0])<<8 | int(b[1]) // 512 for Ag[A-D]: a 4096-bit RSA key, the controller's default
	return len(b) >= 2+n+16
}

// sealedShapedRe is the shape of a sealed-secrets ciphertext without its
// length check: Ag, the high bits of a 4096-bit key's length prefix, then
// base64.
var sealedShapedRe = regexp.MustCompile(`^Ag[A-D][A-Za-z0-9+/]{60,}={0,2}$`)

// sealedShaped reports whether v, an encryptedData value, has the shape
// of a sealed-secrets ciphertext.
func sealedShaped(v string) bool {
	return sealedShapedRe.MatchString(strings.Join(strings.Fields(v), ""))
}

// kubeClientKeyLineRe is a client-key-data line, YAML or JSON.
var kubeClientKeyLineRe = regexp.MustCompile(`["']?client-key-data["']?\s*:\s*["']?([A-Za-z0-9+/]{64,}={0,2})(?:["',\s]|$)`)

// fileRules returns the file-format rules (see the top of this file):
// htpasswd and shadow hashes, and the kubeconfig checks of kube.go.
func fileRules() []*Rule {
	return []*Rule{
		{ID: "htpasswd-hash", Description: "Password hash in an htpasswd or shadow entry (apr1, bcrypt, sha-crypt, yescrypt, {SHA}): crackable offline",
			Severity: High, Keywords: []string{"$apr1$", "$2y$", "$2a$", "$2b$", "$2x$", "$1$", "$5$", "$6$", "$y$", "{sha}"},
			Regex: htpasswdHashRe, Groups: []int{1}, Validate: validCryptHash, Exclude: htpasswdExampleUserRe, priority: prioSpecific},
		// client-key-data is distinctive enough for a line rule too: a
		// kubeconfig pasted into a Terraform heredoc, a Markdown file or a
		// file with another name is not parsed, but this line is found
		// (in a parsed kubeconfig both report the same secret once).
		{ID: "kubeconfig-client-key", Description: "Client private key (client-key-data) of a kubeconfig user", Severity: Critical, Kube: true,
			Keywords: []string{"client-key-data"}, Regex: kubeClientKeyLineRe, Groups: []int{1}, Validate: kubeClientKey, priority: prioKube},
		{ID: "kubeconfig-token", Description: "Bearer token of a kubeconfig user", Severity: Critical, Kube: true, priority: prioKube},
		{ID: "kubeconfig-password", Description: "Basic-auth password of a kubeconfig user", Severity: High, Kube: true, priority: prioKube},
		{ID: "kubeconfig-auth-provider-secret", Description: "OIDC client secret or refresh token in a kubeconfig auth-provider", Severity: High, Kube: true, priority: prioKube},
	}
}
