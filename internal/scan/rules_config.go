package scan

import (
	"encoding/base64"
	"regexp"
	"strings"
)

// Config-file passwords: detectors for the files services read their
// credentials from (.pgpass, redis.conf, SQL scripts, PHP and Django
// settings, .netrc, Maven settings.xml, Dockerfiles, shell scripts, nginx).
// Each rule knows the line shape of its format and reports the value of
// the credential field. Assignments the generic rule already reports well
// (docker-compose environment, `export X_PASSWORD=`, PGPASSWORD=,
// .NET `Password=...;`) get no rule of their own here.
//
// The rules are appended after builtinRules assigns priorities and carry
// prioKube: a format-aware check beats the keyword heuristic on the same
// line, while a known token format (a ghp_ token used as a password) still
// reports under its own rule.

// secretNameRe is the part of a variable name that marks its value as
// secret (Dockerfile ENV/ARG, PHP define).
const secretNameRe = `[A-Za-z0-9_]*(?:PASSWORD|PASSWD|PASSPHRASE|_PASS|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?|AUTH_?KEY)[A-Za-z0-9_]*`

// envSecretName is an upper-case environment variable name that marks its
// value as secret.
const envSecretName = `[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|PASSPHRASE|_PASS|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?|AUTH_?KEY)[A-Z0-9_]*`

// notSecretEnvName matches a variable whose name says it holds a file, a
// path, a name or a setting about a secret rather than the secret: a
// whole _-separated component, so SECURITY does not read as URI.
const notSecretEnvName = `(?:\w*_)?(?:FILE|PATH|DIR|URL|URI|HOST|NAME|REF|ENDPOINT|TYPE|LENGTH|POLICY|HEADER|FIELD|FORMAT|PREFIX|COUNT|TTL|TIMEOUT|MODE|ENABLED|REQUIRED|PROVIDER|VERSION|SIZE|HASH|ALGORITHM|METHOD|ID|KEYID|MOUNT|EXPIRY|EXPIRES|EXISTING)(?:_\w*)?`

// defaultPasswords are the well-known default and demo passwords of
// images, CI service containers and tutorials: never findings.
var defaultPasswords = map[string]bool{
	"postgres": true, "postgresql": true, "root": true, "admin": true, "redis": true, "mysql": true,
	"mariadb": true, "guest": true, "pass": true, "passw0rd": true, "p@ssw0rd": true, "changeit": true,
	"tiger": true, "default": true, "user": true, "demo": true, "foobared": true, "sa": true,
	"oracle": true, "manager": true, "welcome": true, "welcome1": true, "secret": true, "password": true,
	"test": true, "example": true,
}

// configValue accepts a credential field's value: not a variable or
// file reference, a secrets-file path or a default password, and not a short
// all-lower-case word.
func configValue(v string) bool {
	if len(v) < 6 || defaultPasswords[strings.ToLower(v)] {
		return false
	}
	switch v[0] {
	case '$', '%', '*', '@': // references: $VAR, %VAR%, curl's @file; '*' is a MySQL hash only
		if v[0] == '*' && len(v) == 41 { // a MySQL native password hash: see sql-password
			return true
		}
		return false
	}
	if strings.HasPrefix(v, "/run/secrets") || strings.HasPrefix(v, "/var/run/secrets") {
		return false
	}
	if len(v) < 12 {
		lowerWord := true
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 'a' || c > 'z' {
				lowerWord = false
				break
			}
		}
		if lowerWord {
			return false
		}
	}
	return true
}

// randomKeyPlaceholders mark a framework key that was never generated.
var randomKeyPlaceholders = []string{
	"put your unique phrase", "unique phrase", "changeme", "change_me", "change-me", "change this", "changethis",
	"your", "placeholder", "dummy", "fake", "example", "sample", "redacted", "xxxx", "insert", "replace", "todo",
	"not-a-secret", "notasecret", "secret-key", "secret_key",
}

// randomKey accepts a generated framework key (WordPress salts, Django
// SECRET_KEY): long and without a placeholder phrase. Such keys are drawn
// from alphabets with <, >, $, % and braces, so the generic stopwords
// (which treat "<" or "%s" as template syntax) would drop real keys.
func randomKey(v string) bool {
	if len(v) < 32 {
		return false
	}
	lower := strings.ToLower(v)
	for _, w := range randomKeyPlaceholders {
		if strings.Contains(lower, w) {
			return false
		}
	}
	return true
}

// randomKeyShort is randomKey for keys of at least 16 characters (a
// 128-bit HMAC key in hex or base64).
func randomKeyShort(v string) bool {
	if len(v) < 16 || strings.HasPrefix(v, "${") || strings.HasPrefix(v, "#{") {
		return false
	}
	lower := strings.ToLower(v)
	for _, w := range randomKeyPlaceholders {
		if strings.Contains(lower, w) {
			return false
		}
	}
	return true
}

// jwtSectionRe is the opening of a jwt configuration section: a JSON
// object or YAML mapping named jwt, Jwt, JwtSettings, jwt-config, ...
var jwtSectionRe = regexp.MustCompile(`(?im)^\s*["']?jwt[\w-]*["']?\s*:\s*\{?\s*$`)

// jwtSection accepts a jwt-signing-key match on a line that names the
// section itself, or one whose section opened within the lines before.
func jwtSection(_ string, before []byte, match string) bool {
	if strings.Contains(strings.ToLower(match), "jwt") {
		return true
	}
	return jwtSectionRe.Match(before)
}

// validBasicAuth accepts a base64 user:password whose password is not a
// default or placeholder (the dXNlcjpwYXNzd29yZA== of every tutorial).
func validBasicAuth(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(b), ":")
	return ok && user != "" && configValue(pass) && !isPlaceholder(pass) && !hasStopword(pass, defaultStopwords)
}

// pgbouncerFile accepts a match in a PgBouncer auth file by its name
// (userlist.txt, pgbouncer/users.txt, pgbouncer-auth.txt).
func pgbouncerFile(path string, _ []byte, _ string) bool {
	p := strings.ToLower(path)
	return strings.Contains(p, "pgbouncer") || strings.HasSuffix(p, "userlist.txt")
}

// maven encrypts server passwords as {base64} with the master password of
// settings-security.xml.
var mavenEncryptedRe = regexp.MustCompile(`^\{[A-Za-z0-9+/=]{16,}\}$`)

func withPrio(r *Rule, p int) *Rule { r.priority = p; return r }

func withEntropyCheck(r *Rule, e float64) *Rule { r.MinEntropy = e; return r }

// configRules returns the config-file password rules (see the top of
// this file); builtinRules appends them after assigning the others'
// priorities.
func configRules() []*Rule {
	cfg := func(id, desc string, sev Severity, kw []string, re string, groups ...int) *Rule {
		return &Rule{ID: id, Description: desc, Severity: sev, Keywords: kw, Regex: regexp.MustCompile(re), Groups: groups,
			Generic: true, MinEntropy: 2.5, Validate: configValue, priority: prioKube}
	}
	rules := []*Rule{
		// host:port:database:user:password; the port field keeps the
		// prefilter off every other line with colons.
		cfg("pgpass-password", "PostgreSQL password file (.pgpass) entry", High,
			[]string{"5432:", "5433:", "5434:", "5439:", "6432:", "25060:", ":*:"},
			`^([^:#\s][^:\s]*):(\d{2,5}|\*):([^:\s]+):([^:\s]+):(\S+?)\s*$`, 5),
		// requirepass/masterauth, and the ACL users of Redis 6+ (redis.conf
		// or users.acl "user app on >password ~* +@all", ACL SETUSER):
		// a >password rule; #<sha256> rules and nopass hold none.
		// PgBouncer's auth_file: "user" "password" lines, the password in
		// plain text, as md5<hex> or as a SCRAM secret (each lets a client
		// log in through PgBouncer). The line shape is common, so the
		// file's name must say userlist or pgbouncer.
		withContext(cfg("pgbouncer-userlist-password", "PgBouncer auth_file (userlist.txt) password", High, []string{`" "`},
			`^\s*"[^"\s]+"\s+"([^"\s]+)"\s*$`, 1), pgbouncerFile, 0),
		cfg("redis-conf-password", "Redis password (requirepass, masterauth, ACL user >password)", High,
			[]string{"requirepass", "masterauth", " on >", " on '>", ` on ">`, "setuser"},
			`(?i)(?:^\s*|--|config\s+set\s+)(?:requirepass|masterauth)\s+(?:"([^"\s]+)"|'([^'\s]+)'|([^\s"']+))`+
				`|(?:^\s*user|\bacl\s+setuser)\s+\S+\s+(?:[^\s>'"]\S*\s+)*?["']?>([^\s"']+)`, 1, 2, 3, 4),
		cfg("sql-password", "Password in a SQL CREATE/ALTER USER or ROLE statement (IDENTIFIED BY, PASSWORD '...')", High,
			[]string{"password", "identified"},
			`(?i)(?:\b(?:create|alter)\s+(?:user|role|login)\b[^;]*?\bpassword\s*=?\s*N?(?:'([^'\r\n]+)'|"([^"\r\n]+)")`+
				`|\bidentified\s+(?:with\s+['"]?\w+['"]?\s+)?by\s+(?:password\s+)?(?:'([^'\r\n]+)'|"([^"\r\n]+)")`+
				`|\b(?:create|alter)\s+user\s+\S+\s+identified\s+by\s+([A-Za-z0-9_#$]{6,})\b`+
				`|^\s*(?:(?:with|login|encrypted|unencrypted)\s+)*password\s+'([^'\r\n]+)'()`+ // a continued statement's line: a SQL string literal is single-quoted (a .netrc's password "..." is not SQL)

				`|\bset\s+password\s+(?:for\s+\S+\s*)?=\s*(?:password\s*\(\s*)?'([^'\r\n]+)')`,
			1, 2, 3, 4, 5, 6, 7, 8),
		cfg("php-define-password", "Password or secret in a PHP define() (wp-config.php, config.php)", High, []string{"define"},
			`(?i)\bdefine\s*\(\s*['"]`+secretNameRe+`['"]\s*,\s*(?:'([^'\r\n]+)'|"([^"\r\n]+)")`, 1, 2),
		// PHP configuration variables: CodeIgniter $db['default']['password'],
		// Moodle $CFG->dbpass, Joomla public $password, phpMyAdmin
		// $cfg['Servers'][$i]['password'].
		cfg("php-config-password", "Password or secret assigned to a PHP configuration variable", High,
			[]string{"pass", "pwd", "secret", "token", "api_key", "apikey"},
			`(?i)\$\w*(?:->\w+|\[\s*['"]\w+['"]\s*\]|\[\s*\$?\w+\s*\])*?(?:->|\[\s*['"]|\b|_)\w*(?:pass(?:word|wd)?|pwd|secret|token|api_?key)\w*(?:['"]\s*\])?\s*=\s*(?:'([^'\r\n]+)'|"([^"\r\n]+)")\s*;`, 1, 2),
		// The password may be double-quoted (curl and inetutils read
		// password "a b").
		cfg("netrc-password", ".netrc password (machine ... login ... password ...)", High, []string{"password"},
			`(?i)^\s*(?:(?:machine|login|account)\s+\S+\s+|default\s+)*password\s+(?:"([^"\s]+)"|([^\s'"]\S*))`, 1, 2),
		cfg("maven-settings-password", "Password element in an XML config (Maven settings.xml <server>)", High,
			[]string{"<password>", "<passphrase>"},
			`(?i)<(?:password|passphrase)>\s*([^<\s][^<]*?)\s*</(?:password|passphrase)>`, 1),
		cfg("dockerfile-env-secret", "Secret baked into an image by a Dockerfile ENV or ARG", High,
			[]string{"password", "passwd", "passphrase", "pwd", "secret", "token", "api_key", "apikey", "access_key", "accesskey",
				"private_key", "credential", "auth_key", "_pass"},
			`^\s*(?:ENV|ARG)\s+`+secretNameRe+`(?:\s+|=)(?:"([^"\r\n]+)"|'([^'\r\n]+)'|([^\s"']+))`, 1, 2, 3),
		cfg("mysql-cli-password", "Password on a mysql / mysqldump / mariadb command line (-p<pw>, --password=)", High,
			[]string{"mysql", "mariadb"},
			`\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlsh|mariadb|mariadb-dump)\b[^\r\n]*?\s(?:-p|--password=)(?:'([^'\r\n]+)'|"([^"\r\n]+)"|([^\s'";|&]+))`,
			1, 2, 3),
		// Environment entries of docker-compose files and CI workflows:
		// list (- KEY=value) and map (KEY: value) forms with upper-case
		// names, and the KEY=value lines of .env files and shell scripts
		// (export DB_PASS=...). The generic rule reports most of these, but not *_PASS
		// names, and its name filter drops GF_SECURITY_ADMIN_PASSWORD
		// ("uri" in SECURITY). This rule only fills those gaps: it has
		// the generic priority, the generic rule comes first in the table
		// and shares its keywords, so on a line both report the generic
		// finding is kept; a Kubernetes check on the line wins.
		withPrio(cfg("compose-env-secret", "Secret in a docker-compose or CI environment entry (- KEY=value, KEY: value)", High,
			[]string{"password", "passwd", "passphrase", "pwd", "secret", "token", "api_key", "apikey", "access_key", "accesskey",
				"private_key", "credential", "auth_key", "_pass=", "_pass:", `_pass"`, "_pass'"},
			`^\s*(?:-\s*["']?`+envSecretName+`=(?:"([^"\r\n]+)"|'([^'\r\n]+)'|([^\s"']+))["']?`+
				`|["']?`+envSecretName+`["']?:\s+(?:"([^"\r\n]+)"|'([^'\r\n]+)'|([^\s"'#][^\s#]*))`+
				`|(?:export\s+)?`+envSecretName+`=(?:"([^"\r\n]+)"|'([^'\r\n]+)'|([^\s"'#]+)))\s*(?:#.*)?$`,
			1, 2, 3, 4, 5, 6, 7, 8, 9), prioGeneric),
		cfg("cli-password-argument", "Password on a command line: sshpass -p, redis-cli -a, curl -u user:password", High,
			[]string{"sshpass", "redis-cli", "curl"},
			`\bsshpass\s+(?:-[a-oq-z]\S*\s+)*-p\s*(?:'([^'\r\n]+)'|"([^"\r\n]+)"|([^\s'"]+))`+
				`|\bredis-cli\b[^\r\n]*?\s-a\s+(?:'([^'\r\n]+)'|"([^"\r\n]+)"|([^\s'"]+))`+
				`|\bcurl\b[^\r\n]*?\s(?:-u\s*|--user[\s=]+)["']?[^\s:'"]+:([^\s'"]+)`,
			1, 2, 3, 4, 5, 6, 7),
		{ID: "wordpress-auth-key", Description: "WordPress authentication key or salt (wp-config.php)", Severity: High,
			Keywords: []string{"_key", "_salt"},
			Regex:    regexp.MustCompile(`(?i)\bdefine\s*\(\s*['"]((?:SECURE_)?AUTH|LOGGED_IN|NONCE)_(?:KEY|SALT)['"]\s*,\s*(?:'([^'\r\n]+)'|"([^"\r\n]+)")`),
			Groups:   []int{2, 3}, MinEntropy: 4.0, Validate: randomKey, priority: prioSpecific}, // beats php-define-password (AUTH_KEY)
		{ID: "django-secret-key", Description: "Django SECRET_KEY in settings", Severity: High, Keywords: []string{"secret_key"},
			// A literal, or the default of an environment lookup
			// (os.environ.get, os.getenv, django-environ, decouple).
			Regex: regexp.MustCompile(`^\s*SECRET_KEY\s*(?::\s*str\s*)?=\s*(?:[rbu]?(?:'([^'\r\n]+)'|"([^"\r\n]+)")` +
				`|(?:os\.environ\.get|os\.getenv|env(?:\.str)?|config)\(\s*['"]\w+['"]\s*,\s*(?:default\s*=\s*)?(?:'([^'\r\n]+)'|"([^"\r\n]+)"))`),
			Groups: []int{1, 2, 3, 4}, MinEntropy: 3.5, Validate: randomKey, priority: prioKube},
		{ID: "http-basic-auth-header", Description: "HTTP Basic credentials in an Authorization header (nginx proxy_set_header, curl, .http files)",
			Severity: High, Keywords: []string{"basic "},
			Regex:  regexp.MustCompile(`(?i)\bauthorization["']?\s*[:=]?\s*["']?basic\s+([A-Za-z0-9+/]{8,}={0,2})`),
			Groups: []int{1}, Validate: validBasicAuth, priority: prioKube},
		// A JWT signing key under a key name too plain for the generic
		// rule ("Key"), recognised by its section: ASP.NET's
		// appsettings.json "Jwt": {"Key": ...}, Spring's jwt: secret-key:.
		withContext(&Rule{ID: "jwt-signing-key", Description: "JWT signing key in a jwt configuration section (appsettings.json, application.yml)",
			Severity: High, Keywords: []string{`"key"`, "key:", "signingkey", "signing-key", "signing_key", "secretkey", "secret-key", "secret_key"},
			Regex:  regexp.MustCompile(`(?i)(?:"jwt\w*"\s*:\s*\{[^}]*?"|^\s*["']?)(?:issuer[-_]?)?(?:signing[-_]?|secret[-_]?)?key["']?\s*[:=]\s*["']?([^"'\s,}]{16,})`),
			Groups: []int{1}, MinEntropy: 3.0, Validate: randomKeyShort, priority: prioKube}, jwtSection, 3),
		// An Authorization header with a bearer or token credential in a
		// command line or request file: curl -H, wget --header, HTTPie,
		// .http/.rest files. Code that builds the header from a variable
		// ("Bearer " + token, f"Bearer {token}") has no literal to match.
		withEntropyCheck(cfg("http-bearer-token", "Bearer or token credential in an Authorization header (curl -H, wget --header, HTTPie, .http files)", High,
			[]string{"bearer ", "authorization: token", "authorization:token"},
			`(?i)\bauthorization["']?\s*[:=]\s*["']?(?:bearer|token)\s+([A-Za-z0-9._~+/-]{20,}=*)(?:["'\s;,]|$)`, 1), 3.5),
		cfg("http-header-api-key", "API key or token set in a proxy header (nginx proxy_set_header, Apache RequestHeader, HAProxy)", High,
			[]string{"proxy_set_header", "add_header", "grpc_set_header", "more_set", "requestheader", "set-header"},
			`(?i)\b(?:proxy_set_header|add_header|grpc_set_header|more_set_headers|more_set_input_headers|RequestHeader\s+set|http-request\s+set-header)\s+["']?[\w-]*(?:api[_-]?key|token|secret|auth)[\w-]*:?["']?\s+["']?(?:Bearer\s+|Token\s+)?([^\s"';]{12,})`, 1),
	}
	// A Dockerfile variable that names a secret file or a path is not one.
	for _, r := range rules {
		if r.ID == "dockerfile-env-secret" {
			r.Exclude = regexp.MustCompile(`(?i)^\s*(?:ENV|ARG)\s+` + notSecretEnvName + `(?:\s|=)`)
		}
		if r.ID == "compose-env-secret" {
			r.Exclude = regexp.MustCompile(`^\s*(?:-\s*|export\s+)?["']?` + notSecretEnvName + `(?:=|["']?:)`)
		}
		if r.ID == "php-define-password" { // WordPress keys and salts belong to wordpress-auth-key alone
			r.Exclude = regexp.MustCompile(`(?i)define\s*\(\s*['"](?:(?:SECURE_)?AUTH|LOGGED_IN|NONCE)_(?:KEY|SALT)['"]`)
		}
		if r.ID == "maven-settings-password" { // no spaces: a comment's prose is not a password
			r.Validate = func(v string) bool {
				return configValue(v) && !mavenEncryptedRe.MatchString(v) && !strings.ContainsAny(v, " \t")
			}
		}
		if r.ID == "netrc-password" { // a struct field "Password []byte" or PAM's "password [success=1" is not one
			r.Validate = func(v string) bool { return configValue(v) && secretShaped(v) && !strings.ContainsAny(v, "[](){},;") }
		}
	}
	return rules
}
