package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/server/awskms"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// movingAuthz is the real IAM authorizer, except that once armed it moves
// an alias to another key right after a decision on that alias allowed
// it: the move a concurrent UpdateAlias (or a replica applying one) could
// make between a request's authorization and its operation.
type movingAuthz struct {
	sys       *sys.Sys
	armed     atomic.Bool
	alias, to string
	mu        sync.Mutex
	err       error
}

func (m *movingAuthz) Authorize(ctx context.Context, p *auth.Principal, req *policy.Request) error {
	err := m.sys.IAM.Authorize(ctx, p, req)
	if err == nil && req.Resource == m.alias && m.armed.CompareAndSwap(true, false) {
		if _, merr := m.sys.Keys.UpdateAlias(context.Background(), m.alias, m.to, ""); merr != nil {
			m.mu.Lock()
			m.err = merr
			m.mu.Unlock()
		}
	}
	return err
}

// TestAliasMovedAfterAuthorization: a caller allowed only key A (by id)
// names it as alias/app, and the alias is moved to key B right after the
// decision. Encrypt, a batch item, Disable and a tag change must act on A,
// the key decided on, never on B. Without the request's pin table each
// of them acted on B.
func TestAliasMovedAfterAuthorization(t *testing.T) {
	e := &iamEnv{t: t, rec: &memRecorder{}, now: time.Now}
	s := sys.New(barrier.New(inmem.New()), time.Now)
	mover := &movingAuthz{sys: s, alias: "alias/app"}
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: e.rec, Authorizer: mover})
	ts := httptest.NewServer(api)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	var ir client.InitResponse
	e.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken

	var a, b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/app"}, &a)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{}, &b)
	mover.to = b.ID
	tok := e.policyToken("only-a", `statements:
  - effect: allow
    actions: ["kms:*", "key:*"]
    resources: ["`+a.ID+`"]
`)
	ctx := context.Background()
	arm := func() {
		t.Helper()
		if _, err := s.Keys.UpdateAlias(ctx, "alias/app", a.ID, ""); err != nil {
			t.Fatal(err)
		}
		mover.armed.Store(true)
	}
	moved := func() {
		t.Helper()
		if mover.armed.Load() || mover.err != nil {
			t.Fatalf("the alias was not moved (armed %v): %v", mover.armed.Load(), mover.err)
		}
		if id, _, _ := s.Keys.Names("alias/app"); id != b.ID {
			t.Fatalf("alias/app names %s after the move", id)
		}
	}

	arm()
	var enc client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", tok, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x")}, &enc)
	moved()
	if enc.KeyID != a.ID {
		t.Fatalf("encrypt used %s, not the key decided on %s", enc.KeyID, a.ID)
	}
	if rec, _ := e.rec.last("kms:Encrypt"); rec.KeyID != a.ID {
		t.Fatalf("the record names %s", rec.KeyID)
	}

	arm()
	st, raw := e.call("POST", "/v1/kms/encrypt-batch", tok, client.BatchEncryptRequest{Items: []client.EncryptRequest{
		{KeyID: "alias/app", Plaintext: []byte("1")}, {KeyID: "alias/app", Plaintext: []byte("2")}}})
	moved()
	if st != 200 {
		t.Fatalf("batch: %d %s", st, raw)
	}
	for i, r := range decodeInto[client.BatchEncryptResponse](t, raw).Results {
		if r.Error != nil || r.KeyID != a.ID {
			t.Fatalf("batch item %d: key %s, error %+v; want %s", i, r.KeyID, r.Error, a.ID)
		}
	}

	arm()
	e.must("POST", "/v1/keys/"+url.PathEscape("alias/app")+"/disable", tok, nil, nil)
	moved()
	var ka, kb client.Key
	e.must("GET", "/v1/keys/"+a.ID, e.root, nil, &ka)
	e.must("GET", "/v1/keys/"+b.ID, e.root, nil, &kb)
	if ka.State != "Disabled" || kb.State != "Enabled" {
		t.Fatalf("disable via the moved alias: A %s, B %s", ka.State, kb.State)
	}

	arm()
	tags := map[string]string{"team": "a"}
	e.must("PATCH", "/v1/keys/"+url.PathEscape("alias/app"), tok, client.UpdateKeyRequest{Tags: &tags}, nil)
	moved()
	e.must("GET", "/v1/keys/"+a.ID, e.root, nil, &ka)
	e.must("GET", "/v1/keys/"+b.ID, e.root, nil, &kb)
	if ka.Tags["team"] != "a" || len(kb.Tags) != 0 {
		t.Fatalf("tags via the moved alias: A %v, B %v", ka.Tags, kb.Tags)
	}
}

// TestAWSAliasMovedAfterAuthorization: the same through the AWS KMS door,
// with an access key allowed only key A by id: Encrypt and GenerateDataKey
// on alias/app, moved to B right after the decision, use A (the answer's
// KeyId and the audit record), never B.
func TestAWSAliasMovedAfterAuthorization(t *testing.T) {
	e := &awsEnv{t: t, rec: &memRecorder{}, cfg: awskms.Config{Partition: "aws", Region: "eu-west-3", Account: "123456789012"}}
	s := sys.New(barrier.New(inmem.New()), time.Now)
	mover := &movingAuthz{sys: s, alias: "alias/app"}
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: e.rec, Authorizer: mover,
		AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000}), AWSKMS: e.cfg})
	e.ts = httptest.NewTLSServer(api)
	t.Cleanup(e.ts.Close)
	var ir client.InitResponse
	e.rest("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.rest("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken

	var a, b client.Key
	e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/app"}, &a)
	e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{}, &b)
	mover.to = b.ID
	ak := e.accessKey("only-a", `statements:
  - effect: allow
    actions: ["kms:*", "key:*"]
    resources: ["`+a.ID+`"]
`)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	arm := func() {
		t.Helper()
		if _, err := s.Keys.UpdateAlias(ctx, "alias/app", a.ID, ""); err != nil {
			t.Fatal(err)
		}
		mover.armed.Store(true)
	}
	moved := func() {
		t.Helper()
		if mover.armed.Load() || mover.err != nil {
			t.Fatalf("the alias was not moved (armed %v): %v", mover.armed.Load(), mover.err)
		}
	}

	arm()
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/app"), Plaintext: []byte("x")})
	moved()
	if err != nil || aws.ToString(enc.KeyId) != e.cfg.KeyARN(a.ID) {
		t.Fatalf("Encrypt: %v, key %s; want %s", err, aws.ToString(enc.KeyId), e.cfg.KeyARN(a.ID))
	}
	if rec, _ := e.rec.last("kms:Encrypt"); rec.KeyID != a.ID {
		t.Fatalf("the record names %s", rec.KeyID)
	}

	arm()
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app"), NumberOfBytes: aws.Int32(32)})
	moved()
	if err != nil || aws.ToString(dk.KeyId) != e.cfg.KeyARN(a.ID) {
		t.Fatalf("GenerateDataKey: %v, key %s", err, aws.ToString(dk.KeyId))
	}
}
