package transit

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/seal"
)

// Config is the seal's configuration (the server's seal: section with type
// transit; the json tags are the YAML keys).
type Config struct {
	// Address is the unsealing Coffer's URL, https://other-coffer:8200.
	Address string `json:"address"`
	// Addresses lists the replicas of an HA unsealing Coffer instead of (or
	// besides) Address; the client fails over between them.
	Addresses []string `json:"addresses"`
	// Key is the key in the unsealing Coffer: an id or alias/NAME.
	Key string `json:"key"`
	// CACertFile holds the PEM CA certificates to trust for the unsealing
	// Coffer's TLS certificate; empty: the system roots.
	CACertFile string `json:"ca_cert_file"`

	// Credentials: TokenFile alone, or Role with exactly one of
	// AccessKeyFile, KubernetesTokenFile or ClientCertFile+ClientKeyFile.

	// TokenFile holds a Coffer token (cft_...). It is read again at every
	// call, so an agent can renew or replace it; it must be a regular file
	// no group or other user can read or write.
	TokenFile string `json:"token_file"`
	// Role is assumed with the credential below; the client logs in again
	// before the role token expires.
	Role string `json:"role"`
	// AccessKeyFile holds an access key as "ID:SECRET" or as two lines (the
	// id, then the secret); read once, at New. Same permissions as
	// TokenFile.
	AccessKeyFile string `json:"access_key_file"`
	// KubernetesTokenFile is a projected service-account token (workload
	// identity), re-read at every login as the kubelet rotates it.
	KubernetesTokenFile string `json:"kubernetes_token_file"`
	// Cluster names the registered Kubernetes cluster; optional when the
	// token's issuer identifies it.
	Cluster string `json:"cluster"`
	// ClientCertFile and ClientKeyFile are a PEM certificate and its key
	// for certificate login (mTLS); read once, at New.
	ClientCertFile string `json:"client_cert_file"`
	ClientKeyFile  string `json:"client_key_file"`

	// EncryptionContext is added to the context of every Encrypt and
	// Decrypt. The seal always adds coffer-seal: root-key, which this map
	// must not set.
	EncryptionContext map[string]string `json:"encryption_context"`
}

// Context pairs the seal sets itself.
const (
	// PurposeName and PurposeValue bind every ciphertext the seal makes to
	// its purpose, so that a policy on the unsealing Coffer can allow this
	// use of the key alone (StringEquals context.coffer-seal: root-key) and
	// no other ciphertext of the key can stand in for a root key.
	PurposeName  = "coffer-seal"
	PurposeValue = "root-key"
	// probeName marks Health's round trip, whose plaintext is public; a
	// blob whose context holds it is refused.
	probeName = "coffer-seal-probe"
)

// Bounds that Validate enforces.
const (
	maxKeyRef     = 256 // as the server bounds alias names and ids
	maxAddresses  = 16
	maxCtxPairs   = ciphertext.MaxContextPairs - 2 // room for the purpose and probe pairs
	maxCtxBytes   = 4096
	maxSecretFile = 16 << 10 // a token or access key file is a few dozen bytes
)

// addresses returns Address and Addresses as one list.
func (c Config) addresses() []string {
	var out []string
	if c.Address != "" {
		out = append(out, c.Address)
	}
	return append(out, c.Addresses...)
}

// credentialKind names the credential the configuration uses.
func (c Config) credentialKind() string {
	switch {
	case c.TokenFile != "":
		return "token_file"
	case c.AccessKeyFile != "":
		return "access_key"
	case c.KubernetesTokenFile != "":
		return "kubernetes"
	case c.ClientCertFile != "":
		return "client_certificate"
	}
	return ""
}

// Validate checks the configuration without any I/O. Its errors wrap
// seal.ErrMisconfigured: they need the configuration changed.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("%w: transit seal: %v", seal.ErrMisconfigured, err)
	}
	return nil
}

func (c Config) validate() error {
	addrs := c.addresses()
	if len(addrs) == 0 {
		return errors.New("address is required: the URL of the Coffer that holds the unseal key, like https://coffer-unseal:8200")
	}
	if len(addrs) > maxAddresses {
		return fmt.Errorf("%d addresses; at most %d", len(addrs), maxAddresses)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		norm, err := checkAddress(a)
		if err != nil {
			return err
		}
		if seen[norm] {
			return fmt.Errorf("address %s is listed twice", norm)
		}
		seen[norm] = true
	}
	if err := checkKeyRef(c.Key); err != nil {
		return err
	}

	creds := 0
	for _, set := range []bool{c.TokenFile != "", c.AccessKeyFile != "", c.KubernetesTokenFile != "", c.ClientCertFile != "" || c.ClientKeyFile != ""} {
		if set {
			creds++
		}
	}
	switch {
	case creds == 0:
		return errors.New("no credential: set token_file, or role with one of access_key_file, kubernetes_token_file or client_cert_file and client_key_file")
	case creds > 1:
		return errors.New("more than one credential: set only one of token_file, access_key_file, kubernetes_token_file, client_cert_file/client_key_file")
	}
	switch {
	case c.TokenFile != "":
		if c.Role != "" {
			return errors.New("role is not used with token_file (the token already names its policies): remove role, or use access_key_file, kubernetes_token_file or a client certificate to assume the role")
		}
	case c.Role == "":
		return fmt.Errorf("%s needs role: the role in the unsealing Coffer to assume with it", c.credentialKind())
	}
	if c.Role != "" && (len(c.Role) > maxKeyRef || strings.ContainsFunc(c.Role, isSpaceOrControl)) {
		return errors.New("role must be a role name of at most 256 characters without spaces")
	}
	if (c.ClientCertFile == "") != (c.ClientKeyFile == "") {
		return errors.New("client_cert_file and client_key_file go together")
	}
	if c.Cluster != "" && c.KubernetesTokenFile == "" {
		return errors.New("cluster is used only with kubernetes_token_file")
	}

	if len(c.EncryptionContext) > maxCtxPairs {
		return fmt.Errorf("encryption_context has %d pairs; at most %d", len(c.EncryptionContext), maxCtxPairs)
	}
	total := 0
	for k, v := range c.EncryptionContext {
		switch k {
		case "":
			return errors.New("encryption_context has an empty name")
		case PurposeName, probeName:
			return fmt.Errorf("encryption_context must not set %q: the seal sets it", k)
		}
		total += len(k) + len(v)
	}
	if total > maxCtxBytes {
		return fmt.Errorf("encryption_context is %d bytes; at most %d", total, maxCtxBytes)
	}
	return nil
}

// checkAddress refuses anything but an https URL of a host: the unsealing
// Coffer's Decrypt answer carries the root key, and the request a token.
func checkAddress(a string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(a))
	if err != nil {
		return "", fmt.Errorf("address %q is not a URL like https://coffer-unseal:8200", redactURL(a))
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("address %s must use https (like https://coffer-unseal:8200): the unsealing Coffer's answer carries the root key", redactURL(a))
	}
	if u.Host == "" {
		return "", fmt.Errorf("address %s names no host", redactURL(a))
	}
	if u.User != nil {
		return "", fmt.Errorf("address %s must not carry credentials; use token_file or role", redactURL(a))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("address %s must not have a query or fragment", redactURL(a))
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// redactURL hides user information in an address shown in an error.
func redactURL(a string) string {
	if u, err := url.Parse(a); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	if strings.Contains(a, "@") {
		return "(an address with user information, not shown)"
	}
	return a
}

func checkKeyRef(k string) error {
	switch {
	case k == "":
		return errors.New("key is required: the id or alias/NAME of the key in the unsealing Coffer")
	case len(k) > maxKeyRef:
		return fmt.Errorf("key is %d bytes; at most %d", len(k), maxKeyRef)
	case strings.ContainsFunc(k, isSpaceOrControl):
		return errors.New("key must not contain spaces or control characters")
	case k == "alias/":
		return errors.New("key alias/ names no alias")
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// readSecretFile reads a small credential file that only its owner may
// read: a token or access key in a file others can read is not a secret.
// Its errors name the file, never its content.
func readSecretFile(what, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading the %s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("the %s %s is not a regular file", what, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("the %s %s has mode %04o: group and others must have no access (chmod 600 %s)", what, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("reading the %s %s: %w", what, path, err)
	}
	defer clear(b)
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("the %s %s is larger than %d bytes; it should hold one credential", what, path, maxSecretFile)
	}
	return strings.TrimSpace(string(b)), nil
}

// readToken reads and checks the token file.
func readToken(path string) (string, error) {
	tok, err := readSecretFile("token file", path)
	if err != nil {
		return "", err
	}
	if tok == "" {
		return "", fmt.Errorf("the token file %s is empty", path)
	}
	if !credential.Valid(credential.TokenPrefix, tok) {
		return "", fmt.Errorf("the token file %s does not hold one Coffer token (cft_..., checksum valid)", path)
	}
	return tok, nil
}

// readAccessKey reads "ID:SECRET" or "ID\nSECRET".
func readAccessKey(path string) (id, secret string, err error) {
	s, err := readSecretFile("access key file", path)
	if err != nil {
		return "", "", err
	}
	if i, sec, ok := strings.Cut(s, "\n"); ok {
		id, secret = strings.TrimSpace(i), strings.TrimSpace(sec)
	} else {
		id, secret, _ = strings.Cut(s, ":")
	}
	if !credential.Valid(credential.AccessKeyIDPrefix, id) || !credential.Valid(credential.AccessKeySecretPrefix, secret) {
		return "", "", fmt.Errorf("the access key file %s does not hold an access key as ID:SECRET or as two lines (cfak_... then cfsk_...)", path)
	}
	return id, secret, nil
}
