package transit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/seal"
	"sigs.k8s.io/yaml"
)

func TestValidate(t *testing.T) {
	base := func() Config {
		return Config{Address: "https://coffer-unseal:8200", Key: "alias/unseal", TokenFile: "/run/coffer/token"}
	}
	good := map[string]func(*Config){
		"token file":      func(*Config) {},
		"addresses only":  func(c *Config) { c.Address, c.Addresses = "", []string{"https://a:8200", "https://b:8200/prefix"} },
		"role access key": func(c *Config) { c.TokenFile, c.Role, c.AccessKeyFile = "", "seal", "/etc/ak" },
		"role kubernetes": func(c *Config) {
			c.TokenFile, c.Role, c.KubernetesTokenFile, c.Cluster = "", "seal", "/var/run/t", "prod"
		},
		"role certificate": func(c *Config) {
			c.TokenFile, c.Role, c.ClientCertFile, c.ClientKeyFile = "", "seal", "/c.pem", "/k.pem"
		},
		"key id":            func(c *Config) { c.Key = "00112233-4455-6677-8899-aabbccddeeff" },
		"extra context":     func(c *Config) { c.EncryptionContext = map[string]string{"cluster": "coffer-a"} },
		"empty value":       func(c *Config) { c.EncryptionContext = map[string]string{"cluster": ""} },
		"ipv6 with a slash": func(c *Config) { c.Address = "https://[::1]:8200/" },
	}
	for name, change := range good {
		c := base()
		change(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]struct {
		change func(*Config)
		want   string
	}{
		"no address":        {func(c *Config) { c.Address = "" }, "address is required"},
		"http":              {func(c *Config) { c.Address = "http://coffer-unseal:8200" }, "must use https"},
		"no scheme":         {func(c *Config) { c.Address = "coffer-unseal:8200" }, "must use https"},
		"credentials in":    {func(c *Config) { c.Address = "https://user:hunter2@coffer:8200" }, "must not carry credentials"},
		"query":             {func(c *Config) { c.Address = "https://coffer:8200/?x=1" }, "query"},
		"twice":             {func(c *Config) { c.Addresses = []string{"https://coffer-unseal:8200/"} }, "listed twice"},
		"no key":            {func(c *Config) { c.Key = "" }, "key is required"},
		"key space":         {func(c *Config) { c.Key = "alias/un seal" }, "spaces"},
		"key too long":      {func(c *Config) { c.Key = strings.Repeat("k", 257) }, "at most 256"},
		"no credential":     {func(c *Config) { c.TokenFile = "" }, "no credential"},
		"two credentials":   {func(c *Config) { c.AccessKeyFile = "/etc/ak" }, "more than one credential"},
		"token and role":    {func(c *Config) { c.Role = "seal" }, "role is not used with token_file"},
		"access key alone":  {func(c *Config) { c.TokenFile, c.AccessKeyFile = "", "/etc/ak" }, "access_key needs role"},
		"kubernetes alone":  {func(c *Config) { c.TokenFile, c.KubernetesTokenFile = "", "/t" }, "kubernetes needs role"},
		"cert without key":  {func(c *Config) { c.TokenFile, c.Role, c.ClientCertFile = "", "seal", "/c.pem" }, "go together"},
		"key without cert":  {func(c *Config) { c.TokenFile, c.Role, c.ClientKeyFile = "", "seal", "/k.pem" }, "go together"},
		"cluster alone":     {func(c *Config) { c.Cluster = "prod" }, "cluster is used only"},
		"purpose set":       {func(c *Config) { c.EncryptionContext = map[string]string{PurposeName: "root-key"} }, "must not set"},
		"probe set":         {func(c *Config) { c.EncryptionContext = map[string]string{probeName: "x"} }, "must not set"},
		"empty name":        {func(c *Config) { c.EncryptionContext = map[string]string{"": "x"} }, "empty name"},
		"context too large": {func(c *Config) { c.EncryptionContext = map[string]string{"a": strings.Repeat("v", 4096)} }, "at most 4096"},
		"too many pairs": {func(c *Config) {
			c.EncryptionContext = map[string]string{}
			for i := range 63 {
				c.EncryptionContext[strings.Repeat("n", i+1)] = ""
			}
		}, "at most 62"},
	}
	for name, tc := range bad {
		c := base()
		tc.change(&c)
		err := c.Validate()
		if !errors.Is(err, seal.ErrMisconfigured) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want ErrMisconfigured saying %q", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows a password: %v", name, err)
		}
		if _, err := New(c); !errors.Is(err, seal.ErrMisconfigured) {
			t.Errorf("%s: New = %v, want ErrMisconfigured", name, err)
		}
	}
}

// TestConfigYAML: the keys the server's YAML uses.
func TestConfigYAML(t *testing.T) {
	var c Config
	doc := `address: https://coffer-unseal:8200
addresses: [https://coffer-unseal-1:8200]
key: alias/unseal
ca_cert_file: /etc/coffer/unseal-ca.pem
role: coffer-a-seal
kubernetes_token_file: /var/run/secrets/coffer/token
cluster: prod
encryption_context:
  cluster: coffer-a
`
	if err := yaml.UnmarshalStrict([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.Address != "https://coffer-unseal:8200" || len(c.Addresses) != 1 || c.Key != "alias/unseal" || c.CACertFile == "" ||
		c.Role != "coffer-a-seal" || c.KubernetesTokenFile == "" || c.Cluster != "prod" || c.EncryptionContext["cluster"] != "coffer-a" {
		t.Fatalf("parsed %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestReadSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tok := credential.New(credential.TokenPrefix)
	if got, err := readToken(write("tok", "  "+tok+"\n", 0o600)); err != nil || got != tok {
		t.Fatalf("readToken = %q, %v", got, err)
	}
	if got, err := readToken(write("tok400", tok, 0o400)); err != nil || got != tok {
		t.Fatalf("readToken of a 0400 file = %q, %v", got, err)
	}
	for name, tc := range map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"group readable": {tok, 0o640, "mode 0640"},
		"world readable": {tok, 0o604, "mode 0604"},
		"group writable": {tok, 0o620, "mode 0620"},
		"empty":          {"\n", 0o600, "is empty"},
		"not a token":    {"hunter2", 0o600, "does not hold one Coffer token"},
		"two tokens":     {tok + "\n" + tok, 0o600, "does not hold one Coffer token"},
		"bad checksum":   {flipped(tok), 0o600, "does not hold one Coffer token"},
		"too large":      {strings.Repeat("x", maxSecretFile+1), 0o600, "larger than"},
	} {
		p := write(strings.ReplaceAll(name, " ", "-"), tc.content, tc.mode)
		_, err := readToken(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: readToken = %v, want %q", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), tok[4:]) {
			t.Errorf("%s: the error shows the file's content: %v", name, err)
		}
	}
	if _, err := readToken(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("readToken of a directory = %v", err)
	}
	if _, err := readToken(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("readToken of a missing file = %v", err)
	}

	id, secret := credential.NewAccessKey()
	for name, content := range map[string]string{"colon": id + ":" + secret + "\n", "lines": id + "\n" + secret + "\n", "crlf": id + "\r\n" + secret + "\r\n"} {
		gotID, gotSecret, err := readAccessKey(write("ak-"+name, content, 0o600))
		if err != nil || gotID != id || gotSecret != secret {
			t.Errorf("%s: readAccessKey = %q, %v", name, gotID, err)
		}
	}
	for name, content := range map[string]string{"id only": id, "swapped": secret + ":" + id, "secret only": secret, "three lines": id + "\n" + secret + "\nx"} {
		_, _, err := readAccessKey(write("bad-"+strings.ReplaceAll(name, " ", "-"), content, 0o600))
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: readAccessKey = %v", name, err)
		}
	}
	if _, _, err := readAccessKey(write("ak-open", id+":"+secret, 0o644)); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Errorf("readAccessKey of a 0644 file = %v", err)
	}
}

func TestNewReadsNoToken(t *testing.T) {
	// The token file may appear later (an agent writes it): New does not
	// need it, and makes no network call.
	s, err := New(Config{Address: "https://127.0.0.1:1", Key: "alias/unseal", TokenFile: filepath.Join(t.TempDir(), "not-yet")})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := New(Config{Address: "https://127.0.0.1:1", Key: "alias/unseal", TokenFile: "/x", CACertFile: filepath.Join(t.TempDir(), "missing.pem")}); !errors.Is(err, seal.ErrMisconfigured) {
		t.Fatalf("New with a missing CA file = %v", err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not pem"), 0o644)
	if _, err := New(Config{Address: "https://127.0.0.1:1", Key: "alias/unseal", TokenFile: "/x", CACertFile: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("New with a CA file without PEM = %v", err)
	}
	keyFile := filepath.Join(t.TempDir(), "k.pem")
	os.WriteFile(keyFile, []byte("x"), 0o644)
	if _, err := New(Config{Address: "https://127.0.0.1:1", Key: "alias/unseal", Role: "r", ClientCertFile: "/c.pem", ClientKeyFile: keyFile}); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("New with a 0644 client key = %v", err)
	}
}

// flipped changes one character in the middle of a credential.
func flipped(s string) string {
	b := []byte(s)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	return string(b)
}
