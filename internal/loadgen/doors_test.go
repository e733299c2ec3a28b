package loadgen_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/loadgen"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// realServer is a dev Coffer server over HTTPS on loopback with a root
// token, a key with an alias, and an access key allowed to use that key.
type realServer struct {
	token          string
	keyID, alias   string
	akID, akSecret string
	ctx            context.Context
	rootCfg        loadgen.Config // the REST API with the root token
	baseCfg        loadgen.Config // a small run without credentials
}

func newRealServer(t *testing.T) *realServer {
	t.Helper()
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), time.Now)
	_, tok, err := s.DevBootstrap(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The failing runs below send many bad credentials from one source.
		AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000})}))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	rs := &realServer{token: tok, ctx: ctx, alias: "alias/bench-doors"}
	rs.rootCfg = loadgen.Config{Target: ts.URL, Token: tok, InsecureSkipVerify: true}
	key, err := loadgen.CreateKey(ctx, rs.rootCfg, client.CreateKeyRequest{Alias: rs.alias})
	if err != nil {
		t.Fatal(err)
	}
	rs.keyID = key.ID
	ak, err := loadgen.CreateAccessKey(ctx, rs.rootCfg, "bench-doors", []string{key.ID})
	if err != nil {
		t.Fatal(err)
	}
	rs.akID, rs.akSecret = ak.ID, ak.SecretAccessKey
	rs.baseCfg = loadgen.Config{Target: ts.URL, InsecureSkipVerify: true, Concurrency: 2, Requests: 20}
	return rs
}

func (rs *realServer) run(t *testing.T, cfg loadgen.Config) loadgen.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(rs.ctx, time.Minute)
	defer cancel()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestDoorsAgainstRealServer loads encrypt and decrypt through each door of
// a real server: every request succeeds, over HTTP/2.
func TestDoorsAgainstRealServer(t *testing.T) {
	rs := newRealServer(t)
	for _, tc := range []struct {
		door loadgen.Door
		key  string
	}{
		{loadgen.DoorREST, ""},
		{loadgen.DoorAWSKMS, ""},
		{loadgen.DoorAWSKMS, "alias"},
		{loadgen.DoorVault, "alias"},
	} {
		for _, op := range []loadgen.Op{loadgen.OpEncrypt, loadgen.OpDecrypt} {
			t.Run(string(tc.door)+"/"+tc.key+"/"+string(op), func(t *testing.T) {
				cfg := rs.baseCfg
				cfg.Door, cfg.Op, cfg.KeyID = tc.door, op, rs.keyID
				if tc.key == "alias" {
					cfg.KeyID = rs.alias
				}
				switch tc.door {
				case loadgen.DoorAWSKMS:
					cfg.AWSAccessKeyID, cfg.AWSSecretAccessKey = rs.akID, rs.akSecret
					cfg.Context = map[string]string{"app": "bench"}
				default:
					cfg.Token = rs.token
				}
				res := rs.run(t, cfg)
				if res.Ops != 20 || res.Errors != 0 || res.FirstError != "" {
					t.Fatalf("%d ok, %d errors, first %q; want 20 ok", res.Ops, res.Errors, res.FirstError)
				}
				if res.Door != tc.door || res.Protocol != "HTTP/2.0" {
					t.Fatalf("door %q protocol %q", res.Door, res.Protocol)
				}
			})
		}
	}
}

// TestAWSDoorWrongSecretFails: a run signed with another secret reports
// every request as failed with the server's InvalidSignatureException, and
// no success.
func TestAWSDoorWrongSecretFails(t *testing.T) {
	rs := newRealServer(t)
	cfg := rs.baseCfg
	cfg.Door, cfg.KeyID = loadgen.DoorAWSKMS, rs.keyID
	cfg.AWSAccessKeyID = rs.akID
	cfg.AWSSecretAccessKey = strings.Repeat("x", len(rs.akSecret))
	res := rs.run(t, cfg)
	if res.Ops != 0 || res.Errors != 20 || !strings.Contains(res.FirstError, "InvalidSignatureException") {
		t.Fatalf("%d ok, %d errors, first %q; want 20 InvalidSignatureException", res.Ops, res.Errors, res.FirstError)
	}
	// Signed for another region than the server's: refused too.
	cfg.AWSSecretAccessKey, cfg.AWSRegion = rs.akSecret, "eu-west-1"
	res = rs.run(t, cfg)
	if res.Ops != 0 || res.Errors != 20 || !strings.Contains(res.FirstError, "region") {
		t.Fatalf("%d ok, %d errors, first %q; want 20 failures naming the region", res.Ops, res.Errors, res.FirstError)
	}
	// Decrypt prepares its ciphertext through the door: that fails first.
	cfg.AWSRegion, cfg.AWSSecretAccessKey, cfg.Op = "", "wrong", loadgen.OpDecrypt
	if _, err := loadgen.Run(rs.ctx, cfg); err == nil || !strings.Contains(err.Error(), "InvalidSignatureException") {
		t.Fatalf("decrypt with a wrong secret: %v", err)
	}
}

// TestVaultDoorWrongTokenFails: a run with a token the server does not
// know reports every request as failed, with Vault's error shape read.
func TestVaultDoorWrongTokenFails(t *testing.T) {
	rs := newRealServer(t)
	cfg := rs.baseCfg
	cfg.Door, cfg.KeyID, cfg.Token = loadgen.DoorVault, rs.alias, "cft_not-a-token"
	res := rs.run(t, cfg)
	if res.Ops != 0 || res.Errors != 20 || !strings.Contains(res.FirstError, "403") {
		t.Fatalf("%d ok, %d errors, first %q; want 20 failures", res.Ops, res.Errors, res.FirstError)
	}
	// A transit key that does not exist, with a token that may create it
	// (the root token): the first encrypt makes it, as Vault's does, and
	// the run succeeds. (Without that right: TestVaultEncryptUpsert in
	// internal/server.)
	cfg.Token, cfg.KeyID = rs.token, "alias/upserted"
	res = rs.run(t, cfg)
	if res.Ops != 20 || res.Errors != 0 {
		t.Fatalf("%d ok, %d errors, first %q; want the key made and 20 encrypts", res.Ops, res.Errors, res.FirstError)
	}
}

// TestAccessKeyScopedToKey: the access key bench creates may use its key
// and no other.
func TestAccessKeyScopedToKey(t *testing.T) {
	rs := newRealServer(t)
	other, err := loadgen.CreateKey(rs.ctx, rs.rootCfg, client.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rs.baseCfg
	cfg.Door, cfg.KeyID = loadgen.DoorAWSKMS, other.ID
	cfg.AWSAccessKeyID, cfg.AWSSecretAccessKey = rs.akID, rs.akSecret
	res := rs.run(t, cfg)
	if res.Ops != 0 || !strings.Contains(res.FirstError, "AccessDeniedException") {
		t.Fatalf("%d ok, first %q; want AccessDeniedException", res.Ops, res.FirstError)
	}
	if err := loadgen.DeleteAccessKey(rs.ctx, rs.rootCfg, rs.akID, "bench-doors"); err != nil {
		t.Fatal(err)
	}
	cfg.KeyID = rs.keyID
	res = rs.run(t, cfg)
	if res.Ops != 0 || !strings.Contains(res.FirstError, "UnrecognizedClientException") {
		t.Fatalf("after deletion: %d ok, first %q; want UnrecognizedClientException", res.Ops, res.FirstError)
	}
}

// TestDoorConfigValidation: what the compatible doors refuse before any
// request.
func TestDoorConfigValidation(t *testing.T) {
	base := loadgen.Config{Target: "https://127.0.0.1:1", KeyID: "alias/k", Token: "t", AWSAccessKeyID: "cfak_x", AWSSecretAccessKey: "s"}
	for _, tc := range []struct {
		name string
		edit func(*loadgen.Config)
		want string
	}{
		{"unknown door", func(c *loadgen.Config) { c.Door = "gcp" }, "unknown door"},
		{"aws batch", func(c *loadgen.Config) { c.Door, c.Op = loadgen.DoorAWSKMS, loadgen.OpEncryptBatch }, "encrypt and decrypt only"},
		{"vault datakey", func(c *loadgen.Config) { c.Door, c.Op = loadgen.DoorVault, loadgen.OpDataKey }, "encrypt and decrypt only"},
		{"aws no secret", func(c *loadgen.Config) { c.Door, c.AWSSecretAccessKey = loadgen.DoorAWSKMS, "" }, "access key id and its secret"},
		{"aws no id", func(c *loadgen.Config) { c.Door, c.AWSAccessKeyID = loadgen.DoorAWSKMS, "" }, "access key id and its secret"},
		{"vault key id", func(c *loadgen.Config) { c.Door, c.KeyID = loadgen.DoorVault, "3f1c2a9e" }, "alias/NAME"},
		{"vault bare alias", func(c *loadgen.Config) { c.Door, c.KeyID = loadgen.DoorVault, "alias/" }, "alias/NAME"},
		{"vault context", func(c *loadgen.Config) { c.Door, c.Context = loadgen.DoorVault, map[string]string{"a": "b"} }, "no encryption context"},
		{"vault no token", func(c *loadgen.Config) { c.Door, c.Token = loadgen.DoorVault, "" }, "needs a token"},
		{"vault mount", func(c *loadgen.Config) { c.Door, c.VaultMount = loadgen.DoorVault, "/" }, "vault mount"},
	} {
		c := base
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	for _, d := range loadgen.AllDoors() {
		c := base
		c.Door = d
		if err := c.Validate(); err != nil {
			t.Errorf("door %s: %v", d, err)
		}
	}
}
