package scan

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// Near misses of the config-file rules, checked by TestRulesFalsePositives.
var configFalsePositives = map[string][]string{
	"pgpass-password":             {"localhost:5432:*:postgres:postgres", "#db:5432:app:app:@@R::A62:16@@", "job:5432:queued:worker-7:done"},
	"redis-conf-password":         {"# requirepass foobared", "requirepass ${REDIS_PASSWORD}", "masterauth \"{{ redis_password }}\""},
	"sql-password":                {"ALTER ROLE app PASSWORD NULL;", "CREATE USER app WITH PASSWORD :'app_password';", "CREATE USER 'u'@'%' IDENTIFIED BY 'password';"},
	"php-define-password":         {"define('DB_PASSWORD', getenv('DB_PASSWORD'));", "define( 'DB_PASSWORD', 'password_here' );", "define('AUTH_KEY', '@@R::A62:16@@');"},
	"wordpress-auth-key":          {"define( 'AUTH_KEY', 'put your unique phrase here' );", "define('NONCE_SALT', '@@R::A62:20@@');"},
	"php-config-password":         {"$db['default']['password'] = '';", "$CFG->dbpass = getenv('DB_PASS');", "public $password = 'password';"},
	"pgbouncer-userlist-password": {`"app" "$PGBOUNCER_PASSWORD"`, `"app" "changeme"`},
	"http-bearer-token":           {`curl -H "Authorization: Bearer $TOKEN" https://x/`, `"Authorization": "Bearer " + token,`, "Authorization: Bearer <your-token>"},
	"compose-env-secret":          {"      GF_SECURITY_ADMIN_PASSWORD__FILE: /run/secrets/grafana", "      - RABBITMQ_DEFAULT_PASS=guest", "      - MINIO_ROOT_PASSWORD=${MINIO_ROOT_PASSWORD}"},
	"cli-password-argument":       {"sshpass -p \"$SSH_PASSWORD\" ssh ops@h", "redis-cli -a \"$REDIS_PASSWORD\" ping", "curl -u admin:admin http://localhost/", "curl -u \"$U:$P\" https://x/"},
	"netrc-password":              {"machine github.com login me password <token>", "password $GITHUB_TOKEN", "Password reset links expire"},
	"maven-settings-password":     {"<password>${env.NEXUS_PASSWORD}</password>", "<password>{COQLCE6DU6GtcS5P1aB2cD3eF4gH5iJ6kL7=}</password>"},
	"dockerfile-env-secret":       {"ENV DB_PASSWORD_FILE=/run/secrets/db", "ARG NPM_TOKEN", "ENV PASSWORD=changeme", "ENV TOKEN_URL=https://auth.internal/token"},
	"mysql-cli-password":          {"mysql -u root -p\"$MYSQL_ROOT_PASSWORD\"", "mysql -h db -u app -p", "mysql_config_editor set --password"},
	"django-secret-key":           {"SECRET_KEY = os.environ[\"DJANGO_SECRET_KEY\"]", "SECRET_KEY = 'change-me-in-production-this-is-not-used'"},
	"http-basic-auth-header":      {"Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic bm90LWEtcGFpcg=="},
	"http-header-api-key":         {"proxy_set_header X-Api-Key $api_key;", "http-request set-header X-Api-Key %[env(API_KEY)]"},
	"jwt-signing-key": {`"Cache": { "Key": "@@R::A62:32@@" }`, "  \"Key\": \"@@R::A62:32@@\",", `"Jwt": { "Key": "${JWT_SIGNING_KEY}" }`,
		`"Jwt": { "Key": "your-256-bit-secret-goes-here" }`, "jwt:\n  key: short"},
}

func init() {
	for id, fps := range configFalsePositives {
		falsePositives[id] = fps
	}
}

// configFindings scans text (markers expanded) as the file at path.
func configFindings(t *testing.T, path, text string) []Finding {
	t.Helper()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s.scanText(path, []byte(newGen(path+text).expand(text)+"\n"), true).findings
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestConfigRules: each rule reports the credential field's value (not
// the line) on the right line, and each filter it relies on drops the
// near miss written for it.
func TestConfigRules(t *testing.T) {
	hash := "*" + strings.Repeat("0a1b2c3d4e", 4)
	abRun := strings.Repeat("ab", 32)
	cases := []struct {
		name, rule, path, text string
		want                   string // the secret, or "" for no finding of rule
		line                   int
	}{
		// pgpass: the line shape, the port field and configValue.
		{"pgpass", "pgpass-password", ".pgpass", "# comment\ndb:5432:app:app_user:§", "Vq8rTz2LmXp4Kd9w", 2},
		{"pgpass wildcard port", "pgpass-password", ".pgpass", "*:*:*:repl:§", "Hn3kW8pQz7RtY2bX", 1},
		{"pgpass port not a number", "pgpass-password", "x", "root:x:0:0:Hn3kW8pQz7RtY2bX", "", 0},
		{"pgpass default password", "pgpass-password", ".pgpass", "db:5432:*:app:p@ssw0rd", "", 0},
		{"pgpass short", "pgpass-password", ".pgpass", "db:5432:*:app:Ab1!x", "", 0},
		// PgBouncer auth_file: the line shape and the file name.
		{"pgbouncer plain", "pgbouncer-userlist-password", "pgbouncer/userlist.txt", "\"app\" \"§\"", "Xq7mL2zR9kTw4PnB", 1},
		{"pgbouncer md5", "pgbouncer-userlist-password", "etc/userlist.txt", "\"stats\" \"§\"", "md5f11aad137469e4ec902c5bb6b4006911", 1},
		{"pgbouncer other file", "pgbouncer-userlist-password", "words.txt", "\"app\" \"Xq7mL2zR9kTw4PnB\"", "", 0},
		{"pgbouncer empty", "pgbouncer-userlist-password", "userlist.txt", "\"app\" \"\"", "", 0},
		// redis: anchored at the directive, quotes stripped.
		{"redis requirepass", "redis-conf-password", "redis.conf", "requirepass §", "Zk4mN9qTr2Xw7LpB", 1},
		{"redis quoted masterauth", "redis-conf-password", "redis.conf", `masterauth "§"`, "Yt6hJ2vBn8Qx3RmK", 1},
		{"redis command line", "redis-conf-password", "compose.yml", "command: redis-server --requirepass §", "Yt6hJ2vBn8Qx3RmK", 1},
		{"redis acl user", "redis-conf-password", "users.acl", "user app on >§ ~app:* &* +@all", "Vq8rTz2LmXp4Kd9w", 1},
		{"redis acl user in redis.conf", "redis-conf-password", "redis.conf", "user default on nopass ~* +@all\nuser worker +@list ~jobs:* on >§", "Hn3kW8pQz7RtY2bX", 2},
		{"redis acl setuser", "redis-conf-password", "setup.sh", "redis-cli ACL SETUSER reporting on '>§' ~reports:* +@read", "Zk4mN9qTr2Xw7LpB", 1},
		{"redis acl hashed", "redis-conf-password", "users.acl", "user app on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ~* +@all", "", 0},
		{"redis acl nopass", "redis-conf-password", "users.acl", "user default on nopass sanitize-payload ~* &* +@all", "", 0},
		{"redis acl variable", "redis-conf-password", "entrypoint.sh", "redis-cli ACL SETUSER app on \">$REDIS_APP_PASSWORD\" ~* +@all", "", 0},
		{"redis commented", "redis-conf-password", "redis.conf", "# requirepass Zk4mN9qTr2Xw7LpB", "", 0},
		{"redis variable", "redis-conf-password", "redis.conf", "requirepass $REDIS_PW_1", "", 0},
		{"redis lower-case word", "redis-conf-password", "redis.conf", "requirepass redispass", "", 0},
		{"redis stopword", "redis-conf-password", "redis.conf", "requirepass Changeme2024!", "", 0},
		// SQL.
		{"sql create role", "sql-password", "a.sql", "CREATE ROLE app WITH LOGIN PASSWORD '§';", "Gh7kLq2Zx9WmTp4R", 1},
		{"sql identified by", "sql-password", "a.sql", "CREATE USER 'shop'@'%' IDENTIFIED BY '§';", "Rw8nBx3Kq7LmTz2P", 1},
		{"sql identified with plugin", "sql-password", "a.sql", "ALTER USER 'a'@'%' IDENTIFIED WITH mysql_native_password BY '§';", "Rw8nBx3Kq7LmTz2P", 1},
		{"sql mysql native hash", "sql-password", "a.sql", "GRANT USAGE ON *.* TO 'l'@'%' IDENTIFIED BY PASSWORD '" + hash + "';", hash, 1},
		{"sql oracle unquoted", "sql-password", "a.sql", "CREATE USER hr IDENTIFIED BY §;", "Hr4kLq2Zx9Wm", 1},
		{"sql password line", "sql-password", "a.sql", "CREATE ROLE etl WITH\n  LOGIN\n  PASSWORD '§';", "Jx2mQ8rT4zLp9WkN", 3},
		{"sql mssql N literal", "sql-password", "a.sql", "CREATE LOGIN app WITH PASSWORD = N'§';", "Gh7kLq2Zx9WmTp4R", 1},
		{"sql set password", "sql-password", "a.sql", "SET PASSWORD FOR 'app'@'%' = PASSWORD('§');", "Pq4xX8zLr2Kt7WnB", 1},
		{"sql prose identified by", "sql-password", "x.go", "// the volume is identified by volumeName2 and the pod", "", 0},
		{"sql null", "sql-password", "a.sql", "ALTER ROLE app PASSWORD NULL;", "", 0},
		{"sql md5 prefix", "sql-password", "a.sql", "ALTER ROLE app PASSWORD 'md5' || md5('x');", "", 0},
		// PHP and WordPress.
		{"php define", "php-define-password", "wp-config.php", "define( 'DB_PASSWORD', '§' );", "Tq9xL2mZr7Kw4PbN", 1},
		{"php wp key is not php-define-password", "php-define-password", "wp-config.php", "define('AUTH_KEY', 'Tq9xL2mZr7Kw4PbN');", "", 0},
		{"wp salt", "wordpress-auth-key", "wp-config.php", "define('NONCE_SALT', '§');", "h8#Kq2!zL$m9Xr@4Tw&7Pn^3Bv*6Yc(1Ds)5Gf-0Jk=<a>%s", 1},
		{"wp salt low entropy", "wordpress-auth-key", "wp-config.php", "define('AUTH_SALT', '" + abRun + "');", "", 0},
		// WordPress' key alphabet has $ and braces: ${ or {{ in a key is chance.
		{"wp salt with ${", "wordpress-auth-key", "wp-config.php", "define('AUTH_KEY', '§');", "bX7iY-w?DG:{OfFXtN|L#(!_m*{h${P%NL:}^)yi}PzTiO+1nj`j<5#}c.~/48%$", 1},
		{"wp salt with {{", "wordpress-auth-key", "wp-config.php", "define('LOGGED_IN_SALT', '§');", "q]7M{{Vr+2k@Lz!9;Xw^cT4|nB8(pH~3s}J6d.Gf%1yR*0a<Ke=5tQ", 1},
		{"wp salt template", "wordpress-auth-key", "wp-config.php", "define('AUTH_KEY', '{{ wordpress_auth_key | default(lookup(\"password\", \"/dev/null\")) }}');", "", 0},
		{"wp salt env reference", "wordpress-auth-key", "wp-config.php", "define('NONCE_KEY', 'prefix-${WORDPRESS_NONCE_KEY_FROM_THE_ENVIRONMENT}');", "", 0},
		{"wp placeholder", "wordpress-auth-key", "wp-config.php", "define('AUTH_SALT', 'put your unique phrase here, at least sixty four characters long!');", "", 0},
		{"php codeigniter", "php-config-password", "database.php", "$db['default']['password'] = '§';", "Kq9xZ2mLr7Tw4PnB", 1},
		{"php moodle", "php-config-password", "config.php", "$CFG->dbpass    = '§';", "Lm7xQ2zKr9Tw4PnB", 1},
		{"php joomla", "php-config-password", "configuration.php", "\tpublic $password = '§';", "Bz4qX8mLr2Kt7WnY", 1},
		{"php phpmyadmin", "php-config-password", "config.inc.php", "$cfg['Servers'][$i]['password'] = '§';", "Wm4Lp9Zx2QrT7kNv", 1},
		{"php phpmyadmin user", "php-config-password", "config.inc.php", "$cfg['Servers'][$i]['user'] = 'Wm4Lp9Zx2QrT7kNv';", "", 0},
		{"php not a secret name", "php-config-password", "configuration.php", "$db['default']['username'] = 'Bz4qX8mLr2Kt7WnY';", "", 0},
		// .netrc.
		{"netrc one line", "netrc-password", ".netrc", "machine git.corp login bot password §", "Wq7zN2xKr9LmT4pB", 1},
		{"netrc split", "netrc-password", ".netrc", "machine a.corp\n  login ci\n  password §", "Ys3kM8qXz2Rt7LwN", 3},
		{"netrc quoted", "netrc-password", ".netrc", "machine ftp.corp login backup password \"§\"", "Kd8mQ2zXr7Lw4TnB", 1},
		{"netrc quoted is not sql", "sql-password", ".netrc", "machine ftp.corp\n  login backup\n  password \"Kd8mQ2zXr7Lw4TnB\"", "", 0},
		{"netrc quoted placeholder", "netrc-password", ".netrc", "machine ftp.corp login backup password \"$FTP_PASSWORD\"", "", 0},
		{"netrc PAM control", "netrc-password", "common-password", "password [success=1 default=ignore] pam_unix.so", "", 0},
		{"netrc Go field", "netrc-password", "x.go", "\tPassword FlagInfo", "", 0},
		{"netrc placeholder", "netrc-password", ".netrc", "machine a login b password <token>", "", 0},
		// compose and CI environment entries.
		{"compose *_PASS", "compose-env-secret", "docker-compose.yml", "    environment:\n      - RABBITMQ_DEFAULT_PASS=§", "Yt6hJ2vBn8Qx3RmK", 2},
		// The generic rule's name filter compares whole words since issue 19 (SECURITY is not URI), so it reports this line first.
		{"compose SECURITY name", "generic-secret-assignment", "docker-compose.yml", "      GF_SECURITY_ADMIN_PASSWORD: § # admin", "Jx2mQ8rT4zLp9WkN", 1},
		{"env file *_PASS", "compose-env-secret", ".env", "APP_ENV=production\nSMTP_PASS=§", "Qw8eRt5yUi2oPa7s", 2},
		{"shell export *_PASS", "compose-env-secret", "deploy.sh", "export DB_PASS=\"§\"", "Zx3cVb6nMm9kJh2g", 1},
		{"shell export file variable", "compose-env-secret", "deploy.sh", "export DB_PASS_FILE=Zx3cVb6nMm9kJh2g", "", 0},
		{"shell export reference", "compose-env-secret", "deploy.sh", "export DB_PASS=\"${DB_PASS:-}\"", "", 0},
		{"env file default", "compose-env-secret", ".env.ci", "RABBITMQ_DEFAULT_PASS=guest", "", 0},
		{"compose file variable", "compose-env-secret", "docker-compose.yml", "      GF_SECURITY_ADMIN_PASSWORD__FILE: Jx2mQ8rT4zLp9WkN", "", 0},
		{"compose CI default", "compose-env-secret", "ci.yml", "          POSTGRES_PASSWORD: postgres", "", 0},
		// JWT signing keys: the section names the key.
		{"jwt appsettings one line", "jwt-signing-key", "appsettings.json", `  "Jwt": { "Issuer": "api", "Key": "§" },`, "q8Zt2mXw7LpR4kNv9BcY3hJ6", 1},
		{"jwt appsettings nested", "jwt-signing-key", "appsettings.json", "{\n  \"JwtSettings\": {\n    \"Issuer\": \"api\",\n    \"SigningKey\": \"§\"\n  }\n}", "Vb7nQ2xZr9LmT4pK8wYc3hJ6", 4},
		{"jwt yaml", "jwt-signing-key", "application.yml", "jwt:\n  secret-key: §\n  expiration: 3600", "Hk3mZ8qXr2Lw7TnB9vYc4pJ6", 2},
		{"key outside a jwt section", "jwt-signing-key", "appsettings.json", "{\n  \"Cache\": {\n    \"Key\": \"Vb7nQ2xZr9LmT4pK8wYc3hJ6\"\n  }\n}", "", 0},
		{"jwt section too far above", "jwt-signing-key", "appsettings.json", "{\n  \"Jwt\": {\n    \"Issuer\": \"api\",\n    \"Audience\": \"web\",\n    \"Lifetime\": 60,\n    \"Key\": \"Vb7nQ2xZr9LmT4pK8wYc3hJ6\"\n  }\n}", "", 0},
		{"jwt spring expression", "jwt-signing-key", "application.yml", "jwt:\n  signing-key: #{systemProperties.jwtSigningKey}", "", 0},
		{"jwt placeholder", "jwt-signing-key", "appsettings.json", `"Jwt": { "Key": "replace-with-a-real-signing-key" }`, "", 0},
		// Command lines.
		{"sshpass", "cli-password-argument", "ops.sh", "sshpass -p '§' ssh ops@h", "Wq7zN2xKr9LmT4pB", 1},
		{"redis-cli", "cli-password-argument", "ops.sh", "redis-cli -h cache -a § ping", "Zk4mN9qTr2Xw7LpB", 1},
		{"curl -u", "cli-password-argument", "ops.sh", "curl -fsS -u jenkins:§ https://ci/x", "Pm4qX8zLr2Kt7WnB", 1},
		{"curl variables", "cli-password-argument", "ops.sh", `curl -u "$U:$P" https://ci/x`, "", 0},
		// Maven.
		{"maven", "maven-settings-password", "settings.xml", "  <password>§</password>", "Kx8mQ2zRt7Lw4PnB", 1},
		{"maven comment prose", "maven-settings-password", "settings.xml", "<password>optional; leave empty if not used.</password>", "", 0},
		{"maven encrypted", "maven-settings-password", "settings.xml", "<password>{COQLCE6DU6GtcS5P1aB2cD3eF4gH5iJ6kL7=}</password>", "", 0},
		// Dockerfile.
		{"dockerfile env", "dockerfile-env-secret", "Dockerfile", "ENV DB_PASSWORD=§", "Qr8xZ2mLk7Tw4PnB", 1},
		{"dockerfile env space form", "dockerfile-env-secret", "Dockerfile", "ENV API_SECRET §", "Nt5kQ2zXr8Lm4WpB", 1},
		{"testscript env", "dockerfile-env-secret", "x.txtar", "env COFFER_TOKEN=cft_bogus123", "", 0},
		{"dockerfile file name", "dockerfile-env-secret", "Dockerfile", "ENV DB_PASSWORD_FILE=Zx9kLm2pQr7W", "", 0},
		{"dockerfile secrets path", "dockerfile-env-secret", "Dockerfile", "ENV DB_PASSWORD /run/secrets/db_password", "", 0},
		// mysql.
		{"mysql -p", "mysql-cli-password", "r.sh", "mysql -h db -uroot -p§ shop < dump.sql", "Rt8kQ2zXm7Lw4PnB", 1},
		{"mysqldump --password", "mysql-cli-password", "r.sh", "mysqldump --user=b --password='§' shop", "Zm3qX8kLr2Tw7PnB", 1},
		{"mysql -P port", "mysql-cli-password", "r.sh", "mysql -h db -P3306 -u app", "", 0},
		{"mysql variable", "mysql-cli-password", "r.sh", "mysql -u root -p\"$MYSQL_ROOT_PASSWORD\"", "", 0},
		// Django.
		{"django", "django-secret-key", "settings.py", "SECRET_KEY = '§'", "django-insecure-k9#x2!mq$7zr@4lw&8pn^3bv*6yc(1ds)5gf", 1},
		{"django %s in key", "django-secret-key", "settings.py", `SECRET_KEY = "§"`, "k9#x2!mq%(7zr@4lw&8pn^3bv*6yc%s1ds)5gf", 1},
		{"django env default", "django-secret-key", "settings.py", `SECRET_KEY = env("SECRET_KEY", default="§")`, "k9#x2!mq$7zr@4lw&8pn^3bv*6yc(1ds)5gfZZ1", 1},
		{"django environ.get default", "django-secret-key", "settings.py", `SECRET_KEY = os.environ.get("K", "§")`, "k9#x2!mq$7zr@4lw&8pn^3bv*6yc(1ds)5gfZZ1", 1},
		{"django env no default", "django-secret-key", "settings.py", `SECRET_KEY = config('SECRET_KEY')`, "", 0},
		{"django short", "django-secret-key", "settings.py", "SECRET_KEY = 'k9#x2!m'", "", 0},
		// nginx.
		{"basic auth", "http-basic-auth-header", "nginx.conf", `proxy_set_header Authorization "Basic ` + b64("deploy:Tq9xL2mZr7Kw4PbN") + `";`, b64("deploy:Tq9xL2mZr7Kw4PbN"), 1},
		{"basic auth default", "http-basic-auth-header", "nginx.conf", `proxy_set_header Authorization "Basic ` + b64("admin:admin") + `";`, "", 0},
		{"basic auth no colon", "http-basic-auth-header", "nginx.conf", `Authorization: Basic ` + b64("Tq9xL2mZr7Kw4PbN"), "", 0},
		{"api key header", "http-header-api-key", "nginx.conf", `proxy_set_header X-Api-Key "§";`, "Jq7xZ2mLr9Tw4PnBk8Yc", 1},
		{"bearer header", "http-header-api-key", "nginx.conf", `proxy_set_header Authorization "Bearer §";`, "Jq7xZ2mLr9Tw4PnBk8Yc", 1},
		{"curl bearer", "http-bearer-token", "deploy.sh", `curl -sS -H "Authorization: Bearer §" https://api.internal/v1/deploy`, "c8ODdOJ6UDStdg7touohmS2MkTmgZqu7xajxm00o", 1},
		{"wget token", "http-bearer-token", "fetch.sh", `wget --header="Authorization: Token §" https://api.internal/x`, "b9d3f7a1c5e2084f6a9b3d7c1e5f2a8b4c6d0e9f", 1},
		{"http file", "http-bearer-token", "api.http", "GET https://api.internal/orders\nAuthorization: Bearer §", "Hq3Lm8Zx2Rt7Wn4Bv9Yc1Jd6Pk5Sg0Fa", 2},
		{"bearer variable", "http-bearer-token", "deploy.sh", `curl -H "Authorization: Bearer $DEPLOY_TOKEN" https://api.internal/x`, "", 0},
		{"bearer built in code", "http-bearer-token", "client.py", `headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}`, "", 0},
		{"bearer placeholder", "http-bearer-token", "README.md", `curl -H "Authorization: Bearer YOUR_API_TOKEN_GOES_HERE" https://api.vendor.io`, "", 0},
		{"bearer low entropy", "http-bearer-token", "README.md", `curl -H "Authorization: Bearer aaaabbbbccccddddeeeeffff" https://api.vendor.io`, "", 0},
		{"api key variable", "http-header-api-key", "nginx.conf", `proxy_set_header X-Api-Key $http_x_api_key;`, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The secret is filled in at run time (§), so that this
			// file itself does not scan as full of secrets.
			fs := configFindings(t, c.path, strings.Replace(c.text, "§", c.want, 1))
			var got []Finding
			for _, f := range fs {
				if f.RuleID == c.rule {
					got = append(got, f)
				}
			}
			if c.want == "" {
				if len(got) != 0 {
					t.Fatalf("%s reported %q", c.rule, got[0].Secret)
				}
				return
			}
			if len(got) != 1 || got[0].Secret != c.want || got[0].Line != c.line {
				t.Fatalf("want one %s finding %q on line %d; got %+v", c.rule, c.want, c.line, got)
			}
			if len(fs) != 1 {
				t.Errorf("%d findings on one secret: %+v", len(fs), fs)
			}
		})
	}
}

// TestConfigValue pins the value filter shared by the config rules.
func TestConfigValue(t *testing.T) {
	for v, want := range map[string]bool{
		"Vq8rTz2LmXp4Kd9w": true, "correcthorsebattery": true, "*" + strings.Repeat("AB12", 10): true,
		"Ab1!x": false, "@/etc/secret.txt": false, "postgres": false, "P@ssw0rd": false, "$DB_PW": false, "%DB_PW%": false,
		"*starred": false, "/run/secrets/db": false, "redispass": false,
	} {
		if configValue(v) != want {
			t.Errorf("configValue(%q) = %v", v, !want)
		}
	}
}

// TestConfigRulesWinOverGeneric: a config rule and the generic rule on
// one line report once, under the config rule's id.
func TestConfigRulesWinOverGeneric(t *testing.T) {
	key := "k9#x2!mq$7zr@4lw&8pn^3bv*6yc(1ds)5gf"
	fs := configFindings(t, "Dockerfile", strings.Replace("ENV DB_PASSWORD=@@R::A62:16@@\nSECRET_KEY = '§'", "§", key, 1))
	if len(fs) != 2 || fs[0].RuleID != "dockerfile-env-secret" || fs[1].RuleID != "django-secret-key" {
		t.Fatalf("findings %+v", fs)
	}
}

// TestComposeRuleYields: compose-env-secret only fills the generic rule's
// gaps, and a Kubernetes check reports a ConfigMap value under its own id.
func TestComposeRuleYields(t *testing.T) {
	fs := configFindings(t, "docker-compose.yml", "services:\n  db:\n    environment:\n      - POSTGRES_PASSWORD=@@R::A62:16@@")
	if len(fs) != 1 || fs[0].RuleID != "generic-secret-assignment" {
		t.Fatalf("compose line: %+v", fs)
	}
	fs = configFindings(t, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  DB_PASSWORD: @@R::A62:16@@")
	if len(fs) != 1 || fs[0].RuleID != "k8s-configmap-secret" {
		t.Fatalf("ConfigMap: %+v", fs)
	}
}

// BenchmarkScanConfigText scans config files dense in the new rules'
// keywords, with and without the config rules, to show their cost where
// they run; BenchmarkScanText shows files without their keywords.
func BenchmarkScanConfigText(b *testing.B) {
	text := strings.Join([]string{
		"requirepass ${REDIS_PASSWORD}",
		"CREATE ROLE app WITH LOGIN PASSWORD :'pw';",
		"define('DB_NAME', 'wordpress');",
		"machine a.corp login ci password $TOKEN",
		"<password>${env.NEXUS_PASSWORD}</password>",
		"ENV DB_PASSWORD_FILE=/run/secrets/db",
		"mysql -h db -u app -p",
		"proxy_set_header X-Api-Key $api_key;",
		"db:5432:*:app:$PGPASS",
		"    location / { proxy_pass http://backend; }",
		"    image: postgres:16",
	}, "\n") + "\n"
	data := bytes.Repeat([]byte(text), 2000)
	for _, bc := range []struct {
		name    string
		disable []string
	}{
		{"all-rules", nil},
		{"without-config-rules", configRuleIDs()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Options{Config: &Config{Disable: bc.disable}})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				s.scanText("x.conf", data, true)
			}
		})
	}
}

func configRuleIDs() []string {
	var ids []string
	for _, r := range configRules() {
		ids = append(ids, r.ID)
	}
	return ids
}
