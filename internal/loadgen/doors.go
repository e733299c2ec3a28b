package loadgen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cofferkms/coffer/client"
)

// Door names the API a run speaks to the server: Coffer's own REST API or
// one of its compatible APIs (docs/aws-kms.md, docs/vault-compat.md).
type Door string

// The doors. The compatible ones load encrypt and decrypt only.
const (
	// DoorREST is Coffer's own API, authenticated by a bearer token (or
	// Config.Authorization).
	DoorREST Door = "rest"
	// DoorAWSKMS is the AWS KMS JSON 1.1 API: POST / with X-Amz-Target
	// TrentService.Encrypt or .Decrypt, every request signed with
	// Signature Version 4 by the AWS SDK's signer, as a real AWS client
	// signs, with Config.AWSAccessKeyID and AWSSecretAccessKey.
	DoorAWSKMS Door = "aws-kms"
	// DoorVault is the Vault-compatible transit API: POST
	// /v1/<VaultMount>/encrypt/<NAME> (or decrypt) with base64 plaintext
	// and the token in X-Vault-Token. Transit names a key by its alias, so
	// KeyID must be "alias/NAME".
	DoorVault Door = "vault"
)

// AllDoors lists the doors in a stable order, for help texts.
func AllDoors() []Door { return []Door{DoorREST, DoorAWSKMS, DoorVault} }

// DefaultAWSRegion is the default Config.AWSRegion, the region a Coffer
// server signs as unless configured otherwise.
const DefaultAWSRegion = "us-east-1"

// DefaultVaultMount is the default Config.VaultMount.
const DefaultVaultMount = "transit"

// awsContentType is the media type of the AWS JSON 1.1 protocol.
const awsContentType = "application/x-amz-json-1.1"

// awsService is the signing name of KMS in a credential scope.
const awsService = "kms"

// Supports reports whether the door can load op.
func (d Door) Supports(o Op) bool {
	switch d {
	case DoorREST:
		return o.Route() != ""
	case DoorAWSKMS, DoorVault:
		return o == OpEncrypt || o == OpDecrypt
	}
	return false
}

func doorList() string {
	var names []string
	for _, d := range AllDoors() {
		names = append(names, string(d))
	}
	return strings.Join(names, ", ")
}

// checkDoor validates the door-specific fields of c (defaults applied).
func (c Config) checkDoor() error {
	switch c.Door {
	case DoorREST:
		return nil
	case DoorAWSKMS, DoorVault:
	default:
		return fmt.Errorf("unknown door %q (want one of %s)", c.Door, doorList())
	}
	if !c.Door.Supports(c.Op) {
		return fmt.Errorf("door %s loads encrypt and decrypt only, not %s", c.Door, c.Op)
	}
	if c.Door == DoorAWSKMS {
		if c.AWSAccessKeyID == "" || c.AWSSecretAccessKey == "" {
			return errors.New("door aws-kms needs an access key id and its secret to sign with")
		}
		return nil
	}
	if !strings.HasPrefix(c.KeyID, "alias/") || len(c.KeyID) == len("alias/") {
		return fmt.Errorf("door vault names transit keys by alias: the key must be alias/NAME, not %q", c.KeyID)
	}
	if len(c.Context) > 0 {
		return errors.New("door vault takes no encryption context (a transit context is bytes, not key/value pairs)")
	}
	if c.vaultToken() == "" {
		return errors.New("door vault needs a token (sent as X-Vault-Token)")
	}
	if strings.Trim(c.VaultMount, "/") == "" || strings.ContainsAny(c.VaultMount, "?#") {
		return fmt.Errorf("vault mount %q: want a path like transit", c.VaultMount)
	}
	return nil
}

// vaultToken is the token the vault door sends: Token, or the bearer
// token of Authorization (a role's session).
func (c Config) vaultToken() string {
	if c.Token != "" {
		return c.Token
	}
	if t, ok := strings.CutPrefix(c.Authorization, "Bearer "); ok {
		return t
	}
	return ""
}

// transitName is the transit key name of KeyID (alias/NAME).
func (c Config) transitName() string { return strings.TrimPrefix(c.KeyID, "alias/") }

// doorPath is the path the door posts op to.
func (c Config) doorPath(o Op) string {
	switch c.Door {
	case DoorAWSKMS:
		return "/"
	case DoorVault:
		return "/v1/" + strings.Trim(c.VaultMount, "/") + "/" + string(o) + "/" + url.PathEscape(c.transitName())
	}
	return o.Route()
}

// setDoorHeaders sets the headers every request of op through the door
// carries; the AWS signature is added per request (signer).
func (c Config) setDoorHeaders(h http.Header, o Op) {
	switch c.Door {
	case DoorAWSKMS:
		h.Set("Content-Type", awsContentType)
		if o == OpDecrypt {
			h.Set("X-Amz-Target", "TrentService.Decrypt")
		} else {
			h.Set("X-Amz-Target", "TrentService.Encrypt")
		}
	case DoorVault:
		h.Set("Content-Type", "application/json")
		h.Set("X-Vault-Token", c.vaultToken())
	default:
		c.setHeaders(h)
	}
}

// awsEncrypt and awsDecrypt are the AWS request bodies the run sends
// (the JSON 1.1 protocol carries blobs in standard base64, as
// encoding/json does []byte).
type awsEncrypt struct {
	KeyId             string            `json:"KeyId"`
	Plaintext         []byte            `json:"Plaintext"`
	EncryptionContext map[string]string `json:"EncryptionContext,omitempty"`
}

type awsDecrypt struct {
	CiphertextBlob    []byte            `json:"CiphertextBlob"`
	KeyId             string            `json:"KeyId,omitempty"`
	EncryptionContext map[string]string `json:"EncryptionContext,omitempty"`
}

// signer signs the requests of one worker of the aws-kms door with the
// SDK's Signature Version 4 signer, as an AWS client does; each worker
// has its own, so its cache of derived keys is not shared.
type signer struct {
	s           *v4.Signer
	creds       aws.Credentials
	region      string
	payloadHash string // hex SHA-256 of the run's one body
	hdr         http.Header
	url         url.URL
}

func (c Config) newSigner(body []byte) *signer {
	if c.Door != DoorAWSKMS {
		return nil
	}
	sum := sha256.Sum256(body)
	return &signer{
		s:           v4.NewSigner(),
		creds:       aws.Credentials{AccessKeyID: c.AWSAccessKeyID, SecretAccessKey: c.AWSSecretAccessKey},
		region:      c.AWSRegion,
		payloadHash: hex.EncodeToString(sum[:]),
	}
}

// sign gives req (a shallow copy of the run's template) the signer's own
// headers and URL and signs it now. They are reused from one request to
// the next: the signer sets the same fields (X-Amz-Date, Authorization,
// the query) every time, and a worker sends its next request only once the
// transport closed the previous one's body, so after it wrote its headers.
func (s *signer) sign(req *http.Request) error {
	if s.hdr == nil {
		s.hdr = req.Header.Clone()
	}
	req.Header = s.hdr
	s.url = *req.URL
	req.URL = &s.url
	return s.s.SignHTTP(req.Context(), s.creds, req, s.payloadHash, awsService, s.region, time.Now())
}

// doorCall sends one request of op through the door outside the measured
// loop (the preparation of decrypt) and decodes a 2xx answer into out.
func (c Config) doorCall(ctx context.Context, hc *http.Client, o Op, in, out any) error {
	base, err := c.baseURL()
	if err != nil {
		return err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	path := c.doorPath(o)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	c.setDoorHeaders(req.Header, o)
	if s := c.newSigner(body); s != nil {
		if err := s.sign(req); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("POST %s: reading answer: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", path, describeFailure(resp.Status, data))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("POST %s: decoding answer: %w", path, err)
	}
	return nil
}

// buildDoorBody makes the body every request of a compatible door's run
// carries. For decrypt it encrypts one payload through the same door.
func buildDoorBody(ctx context.Context, hc *http.Client, c Config) ([]byte, error) {
	pt := payload(c.PayloadSize)
	switch c.Door {
	case DoorAWSKMS:
		enc := awsEncrypt{KeyId: c.KeyID, Plaintext: pt, EncryptionContext: c.Context}
		if c.Op == OpEncrypt {
			return json.Marshal(enc)
		}
		var er struct {
			CiphertextBlob []byte `json:"CiphertextBlob"`
		}
		if err := c.doorCall(ctx, hc, OpEncrypt, enc, &er); err != nil {
			return nil, fmt.Errorf("preparing a ciphertext to decrypt: %w", err)
		}
		if len(er.CiphertextBlob) == 0 {
			return nil, errors.New("preparing a ciphertext to decrypt: the Encrypt answer has no CiphertextBlob")
		}
		return json.Marshal(awsDecrypt{CiphertextBlob: er.CiphertextBlob, KeyId: c.KeyID, EncryptionContext: c.Context})
	case DoorVault:
		enc := map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)}
		if c.Op == OpEncrypt {
			return json.Marshal(enc)
		}
		var er struct {
			Data struct {
				Ciphertext string `json:"ciphertext"`
			} `json:"data"`
		}
		if err := c.doorCall(ctx, hc, OpEncrypt, enc, &er); err != nil {
			return nil, fmt.Errorf("preparing a ciphertext to decrypt: %w", err)
		}
		if er.Data.Ciphertext == "" {
			return nil, errors.New("preparing a ciphertext to decrypt: the encrypt answer has no data.ciphertext")
		}
		return json.Marshal(map[string]string{"ciphertext": er.Data.Ciphertext})
	}
	return nil, fmt.Errorf("unknown door %q", c.Door)
}

// describeDoorFailure reads the error body of the AWS door
// ({"__type":..., "message":...}) or the Vault door ({"errors":[...]});
// ok is false for any other body.
func describeDoorFailure(status string, body []byte) (string, bool) {
	var e struct {
		Type    string   `json:"__type"`
		Message string   `json:"message"`
		Errors  []string `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", false
	}
	switch {
	case e.Type != "":
		return fmt.Sprintf("%s: %s: %s", status, e.Type, e.Message), true
	case len(e.Errors) > 0:
		return fmt.Sprintf("%s: %s", status, strings.Join(e.Errors, "; ")), true
	}
	return "", false
}

// benchAccessKeyActions are what the access key CreateAccessKey makes may
// do, and only on the keys it names.
var benchAccessKeyActions = []string{"kms:Encrypt", "kms:Decrypt"}

// CreateAccessKey writes policy policyName, allowing encrypt and decrypt
// with the keys named in keyRefs (ids or alias/NAME) and nothing else,
// and creates an access key holding it (description "coffer bench"), with
// cfg's REST credentials. The answer carries the key's secret.
func CreateAccessKey(ctx context.Context, cfg Config, policyName string, keyRefs []string) (client.CreateAccessKeyResponse, error) {
	var ak client.CreateAccessKeyResponse
	if len(keyRefs) == 0 {
		return ak, errors.New("an access key for bench needs the keys it may use")
	}
	hc, err := cfg.newHTTPClient()
	if err != nil {
		return ak, err
	}
	defer hc.CloseIdleConnections()
	doc, err := json.Marshal(map[string]any{"statements": []map[string]any{{
		"effect": "allow", "actions": benchAccessKeyActions, "resources": keyRefs,
	}}})
	if err != nil {
		return ak, err
	}
	// JSON is YAML: the policy document as JSON.
	put := client.PutPolicyRequest{Description: "coffer bench: encrypt and decrypt with its key", Document: string(doc)}
	if err := cfg.sendJSON(ctx, hc, http.MethodPut, "/v1/policies/"+url.PathEscape(policyName), put, nil); err != nil {
		return ak, err
	}
	req := client.CreateAccessKeyRequest{Description: "coffer bench", Policies: []string{policyName}}
	if err := cfg.sendJSON(ctx, hc, http.MethodPost, "/v1/access-keys", req, &ak); err != nil {
		return ak, err
	}
	if ak.ID == "" || ak.SecretAccessKey == "" {
		return ak, errors.New("POST /v1/access-keys: the answer has no access key id or secret")
	}
	return ak, nil
}

// DeleteAccessKey deletes access key id and then policy policyName (when
// not empty), as CreateAccessKey made them.
func DeleteAccessKey(ctx context.Context, cfg Config, id, policyName string) error {
	hc, err := cfg.newHTTPClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	if err := cfg.sendJSON(ctx, hc, http.MethodDelete, "/v1/access-keys/"+url.PathEscape(id), nil, nil); err != nil {
		return err
	}
	if policyName == "" {
		return nil
	}
	return cfg.sendJSON(ctx, hc, http.MethodDelete, "/v1/policies/"+url.PathEscape(policyName), nil, nil)
}

// DeleteAlias deletes alias name (alias/NAME).
func DeleteAlias(ctx context.Context, cfg Config, name string) error {
	hc, err := cfg.newHTTPClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	return cfg.sendJSON(ctx, hc, http.MethodDelete, "/v1/aliases/"+url.PathEscape(name), nil, nil)
}
