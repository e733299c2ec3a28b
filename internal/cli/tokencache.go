package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferkms/coffer/client"
)

// With COFFER_ROLE set, every command acts in the role. Logging in on
// every run would mint a token per command (each one audited, each one
// live until it expires), so the CLI keeps the role token in a file until
// two thirds of its lifetime have passed:
//
//	$XDG_CONFIG_HOME/coffer/role-tokens/<sha256>.json   (mode 0600, directory 0700)
//
// The file name is a SHA-256 over the server address, the role and the
// credential that logs in (the access key id and secret, the token, the
// service-account token file and cluster, the client certificate), so
// different servers, roles and credentials never share a token, and a
// rotated secret starts a new session. COFFER_TOKEN_CACHE=0 turns the
// cache off; bench and kms-plugin, which run long, never use it. A file
// that another user could read, or that is not a regular
// file owned by the caller, is ignored. docs/identity.md describes it.

// envTokenCache turns the role token cache off when it is 0 (or false).
const envTokenCache = "COFFER_TOKEN_CACHE"

// fileTokenCache is a client.RoleTokenCache kept in one file.
type fileTokenCache struct {
	path string
}

// cachedToken is the file's content.
type cachedToken struct {
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// roleTokenCache returns the cache of the role session the settings and
// credentials describe, or nil when there is none (no role, the cache is
// off, or no config directory).
func roleTokenCache(s settings, c credentials) client.RoleTokenCache {
	if c.role == "" {
		return nil
	}
	if on, err := client.ParseBoolEnv(os.Getenv(envTokenCache)); os.Getenv(envTokenCache) != "" && (err != nil || !on) {
		return nil
	}
	dir, err := os.UserConfigDir()
	if err != nil || dir == "" {
		return nil
	}
	h := sha256.New()
	for _, part := range []string{"coffer role token v1", s.address, c.role, c.token, c.accessKeyID, c.secretAccessKey,
		c.tokenFile, c.cluster, c.clientCert, c.clientKey} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	name := hex.EncodeToString(h.Sum(nil)) + ".json"
	return &fileTokenCache{path: filepath.Join(dir, "coffer", "role-tokens", name)}
}

// Load implements client.RoleTokenCache. Any problem means no token.
func (f *fileTokenCache) Load() (string, time.Time, time.Time, bool) {
	st, err := os.Lstat(f.path)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 || !ownedByCaller(st) {
		return "", time.Time{}, time.Time{}, false
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return "", time.Time{}, time.Time{}, false
	}
	var ct cachedToken
	if json.Unmarshal(data, &ct) != nil || ct.Token == "" {
		return "", time.Time{}, time.Time{}, false
	}
	return ct.Token, ct.CreatedAt, ct.ExpiresAt, true
}

// Store implements client.RoleTokenCache: it writes a temporary file of
// mode 0600 and renames it over the cache file. Failures are ignored: the
// cache only saves logins.
func (f *fileTokenCache) Store(token string, createdAt, expiresAt time.Time) {
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	data, err := json.Marshal(cachedToken{Token: token, CreatedAt: createdAt, ExpiresAt: expiresAt})
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return
	}
	if err := tmp.Close(); err != nil {
		return
	}
	_ = os.Rename(tmp.Name(), f.path)
}
