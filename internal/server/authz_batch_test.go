package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/monitor"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// policyToken stores doc as the policy name and returns a token carrying it.
func (e *iamEnv) policyToken(name, doc string) string {
	e.t.Helper()
	e.must("PUT", "/v1/policies/"+name, e.root, client.PutPolicyRequest{Document: doc}, nil)
	var tok client.CreateTokenResponse
	e.must("POST", "/v1/auth/token/create", e.root, client.CreateTokenRequest{TTL: "1h", Policies: []string{name}}, &tok)
	return tok.Token
}

// call sends in with token and returns the status and the raw body.
func (e *iamEnv) call(method, path, token string, in any) (int, []byte) {
	e.t.Helper()
	st, _, raw := e.do(method, path, bearer(token), in)
	return st, raw
}

func decodeInto[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return v
}

// TestEncryptBatchAuthorizesEveryItem: every item of an encrypt-batch is
// authorized with its own key and its own encryption context, exactly as a
// single Encrypt of it would be, whether or not it names the batch key.
func TestEncryptBatchAuthorizesEveryItem(t *testing.T) {
	e := newIAMEnv(t, nil)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/app"}, nil)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/other"}, nil)

	// A deny on a context value, and an allow only for public data.
	denyRestricted := e.policyToken("deny-restricted", `statements:
  - effect: allow
    actions: [kms:Encrypt]
    resources: [alias/app]
  - sid: NoRestricted
    effect: deny
    actions: [kms:Encrypt]
    resources: ["*"]
    conditions:
      StringEquals:
        context.tier: restricted
`)
	onlyPublic := e.policyToken("only-public", `statements:
  - effect: allow
    actions: [kms:Encrypt]
    resources: [alias/app]
    conditions:
      StringEquals:
        context.tier: public
`)
	restricted := map[string]string{"tier": "restricted"}
	public := map[string]string{"tier": "public"}

	for _, tok := range []string{denyRestricted, onlyPublic} {
		// The single call is refused...
		if st, raw := e.call("POST", "/v1/kms/encrypt", tok, client.EncryptRequest{KeyID: "alias/app", Plaintext: []byte("x"), Context: restricted}); st != 403 {
			t.Fatalf("single encrypt with tier=restricted: %d %s", st, raw)
		}
		// ...and so is the same item in a batch, with the batch key, with
		// the key named on the item, and in every position.
		for _, req := range []client.BatchEncryptRequest{
			{KeyID: "alias/app", Items: []client.EncryptRequest{{Plaintext: []byte("x"), Context: restricted}}},
			{KeyID: "alias/app", Items: []client.EncryptRequest{{Plaintext: []byte("ok"), Context: public}, {Plaintext: []byte("x"), Context: restricted}}},
			{Items: []client.EncryptRequest{{KeyID: "alias/app", Plaintext: []byte("ok"), Context: public}, {KeyID: "alias/app", Plaintext: []byte("x"), Context: restricted}}},
			{KeyID: "alias/app", Items: []client.EncryptRequest{{Plaintext: []byte("ok"), Context: public}, {KeyID: "alias/app", Plaintext: []byte("x"), Context: restricted}}},
		} {
			st, raw := e.call("POST", "/v1/kms/encrypt-batch", tok, req)
			if st != 200 {
				t.Fatalf("batch %+v: %d %s", req, st, raw)
			}
			res := decodeInto[client.BatchEncryptResponse](t, raw).Results
			for i, it := range req.Items {
				wantDenied := it.Context["tier"] == "restricted"
				if gotDenied := res[i].Error != nil && res[i].Error.Code == "permission_denied"; gotDenied != wantDenied {
					t.Errorf("batch %+v item %d (tier %s): result %+v", req.KeyID, i, it.Context["tier"], res[i])
				}
				if !wantDenied && (res[i].Error != nil || len(res[i].Ciphertext) == 0) {
					t.Errorf("item %d of tier public failed: %+v", i, res[i].Error)
				}
			}
		}
	}

	// A caller allowed on one key only may batch for that key when every
	// item names it (no batch key): the route itself is no reason to deny.
	appOnly := e.policyToken("app-only", "statements:\n  - effect: allow\n    actions: [kms:Encrypt]\n    resources: [alias/app]\n")
	st, raw := e.call("POST", "/v1/kms/encrypt-batch", appOnly, client.BatchEncryptRequest{Items: []client.EncryptRequest{
		{KeyID: "alias/app", Plaintext: []byte("a")}, {KeyID: "alias/other", Plaintext: []byte("b")}}})
	if st != 200 {
		t.Fatalf("key-scoped caller, items naming their keys: %d %s", st, raw)
	}
	res := decodeInto[client.BatchEncryptResponse](t, raw).Results
	if res[0].Error != nil || res[1].Error == nil || res[1].Error.Code != "permission_denied" {
		t.Fatalf("results: %+v / %+v", res[0], res[1].Error)
	}
	// A caller allowed no kms:Encrypt at all is refused at the door.
	nothing := e.policyToken("decrypt-only", "statements:\n  - effect: allow\n    actions: [kms:Decrypt]\n    resources: [\"*\"]\n")
	if st, raw := e.call("POST", "/v1/kms/encrypt-batch", nothing, client.BatchEncryptRequest{Items: []client.EncryptRequest{{KeyID: "alias/app", Plaintext: []byte("a")}}}); st != 403 {
		t.Fatalf("caller without kms:Encrypt: %d %s", st, raw)
	}
}

// TestDecryptBatchAuthorizesEachItemsKey: each item is authorized on the key
// its own ciphertext names, not on the first item's.
func TestDecryptBatchAuthorizesEachItemsKey(t *testing.T) {
	e := newIAMEnv(t, nil)
	var a, b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/a"}, &a)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/b"}, &b)
	var ctA, ctB client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/a", Plaintext: []byte("A")}, &ctA)
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/b", Plaintext: []byte("B")}, &ctB)

	denyB := e.policyToken("deny-b", `statements:
  - effect: allow
    actions: [kms:Decrypt]
    resources: ["*"]
  - effect: deny
    actions: [kms:Decrypt]
    resources: [alias/b]
`)
	onlyA := e.policyToken("only-a", "statements:\n  - effect: allow\n    actions: [kms:Decrypt]\n    resources: [alias/a]\n")
	for name, tok := range map[string]string{"denied b": denyB, "allowed only a": onlyA} {
		for _, order := range [][]client.EncryptResponse{{ctA, ctB}, {ctB, ctA}, {ctA, ctA, ctB}} {
			req := client.BatchDecryptRequest{}
			for _, ct := range order {
				req.Items = append(req.Items, client.DecryptRequest{Ciphertext: ct.Ciphertext})
			}
			st, raw := e.call("POST", "/v1/kms/decrypt-batch", tok, req)
			if st != 200 {
				t.Fatalf("%s: %d %s", name, st, raw)
			}
			res := decodeInto[client.BatchDecryptResponse](t, raw).Results
			for i, ct := range order {
				if ct.KeyID == b.ID {
					if res[i].Error == nil || res[i].Error.Code != "permission_denied" || res[i].Plaintext != nil {
						t.Errorf("%s: item %d (key b) = %+v, want permission_denied", name, i, res[i])
					}
				} else if res[i].Error != nil || string(res[i].Plaintext) != "A" {
					t.Errorf("%s: item %d (key a) = %+v", name, i, res[i])
				}
			}
		}
	}
}

// TestBatchItemsAudited: the record of a batch names every item's key,
// version, context (as HMACs in the trail) and outcome, denied items
// included.
func TestBatchItemsAudited(t *testing.T) {
	e := newIAMEnv(t, nil)
	var a, b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/a"}, &a)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/b"}, &b)
	tok := e.policyToken("a-only", "statements:\n  - effect: allow\n    actions: [kms:Encrypt, kms:Decrypt]\n    resources: [alias/a]\n")

	st, raw := e.call("POST", "/v1/kms/encrypt-batch", tok, client.BatchEncryptRequest{KeyID: "alias/a", Items: []client.EncryptRequest{
		{Plaintext: []byte("1"), Context: map[string]string{"app": "one"}},
		{KeyID: "alias/b", Plaintext: []byte("2"), Context: map[string]string{"app": "two"}},
		{KeyID: "alias/a", Plaintext: []byte("3")},
	}})
	if st != 200 {
		t.Fatalf("encrypt-batch: %d %s", st, raw)
	}
	res := decodeInto[client.BatchEncryptResponse](t, raw).Results
	rec, _ := e.rec.last("kms:Encrypt")
	want := []audit.Item{
		{KeyID: a.ID, Version: 1, Outcome: "ok"},
		{KeyID: b.ID, Outcome: "error", ErrorCode: "permission_denied"},
		{KeyID: a.ID, Version: 1, Outcome: "ok"},
	}
	checkItems(t, "encrypt-batch", rec, want, []map[string]string{{"app": "one"}, {"app": "two"}, nil})
	if res[0].Error != nil || res[1].Error == nil {
		t.Fatalf("results %+v", res)
	}

	st, raw = e.call("POST", "/v1/kms/decrypt-batch", tok, client.BatchDecryptRequest{Items: []client.DecryptRequest{
		{Ciphertext: res[0].Ciphertext, Context: map[string]string{"app": "one"}},
		{Ciphertext: []byte("not a ciphertext")},
		{Ciphertext: res[2].Ciphertext, Context: map[string]string{"app": "wrong"}},
	}})
	if st != 200 {
		t.Fatalf("decrypt-batch: %d %s", st, raw)
	}
	rec, _ = e.rec.last("kms:Decrypt")
	checkItems(t, "decrypt-batch", rec, []audit.Item{
		{KeyID: a.ID, Version: 1, Outcome: "ok"},
		{Outcome: "error", ErrorCode: "permission_denied"}, // no key to be allowed on, as for a single decrypt
		{KeyID: a.ID, Version: 1, Outcome: "error", ErrorCode: "invalid_ciphertext"},
	}, []map[string]string{{"app": "one"}, nil, {"app": "wrong"}})
}

func checkItems(t *testing.T, what string, rec audit.Record, want []audit.Item, ctx []map[string]string) {
	t.Helper()
	if len(rec.Items) != len(want) {
		t.Fatalf("%s: record has %d items, want %d: %+v", what, len(rec.Items), len(want), rec)
	}
	for i, w := range want {
		g := rec.Items[i]
		if g.KeyID != w.KeyID || g.Outcome != w.Outcome || g.ErrorCode != w.ErrorCode || (w.Version != 0 && g.Version != w.Version) {
			t.Errorf("%s: item %d = %+v, want %+v", what, i, g, w)
		}
		// The memory recorder sees the inputs the trail turns into HMACs.
		if len(g.ContextValues) != len(ctx[i]) || (ctx[i] != nil && g.ContextValues["app"] != ctx[i]["app"]) {
			t.Errorf("%s: item %d context = %v, want %v", what, i, g.ContextValues, ctx[i])
		}
	}
}

// TestBatchDenialsRaiseAlerts: denied items of a batch count as denials for
// the alert engine and the metrics, like as many single requests: 25
// denied items raise denied_burst (20 in a minute) as 25 single denials do.
func TestBatchDenialsRaiseAlerts(t *testing.T) {
	var alerts atomic.Int64
	seen := make(chan monitor.Alert, 16)
	eng, err := monitor.NewEngine(monitor.DefaultRules(), nil, nil, func(a monitor.Alert) {
		if a.Rule == monitor.RuleDenied {
			alerts.Add(1)
			select {
			case seen <- a:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go eng.Run(ctx)
	metrics := monitor.NewMetrics(0, nil)
	e := newIAMEnvWith(t, func(o *server.Options) { o.Alerts, o.Metrics = eng, metrics })

	var a, b client.Key
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/a"}, &a)
	e.must("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/b"}, &b)
	var ctB client.EncryptResponse
	e.must("POST", "/v1/kms/encrypt", e.root, client.EncryptRequest{KeyID: "alias/b", Plaintext: []byte("B")}, &ctB)
	tok := e.policyToken("a-only", "statements:\n  - effect: allow\n    actions: [kms:Decrypt]\n    resources: [alias/a]\n")
	req := client.BatchDecryptRequest{}
	for range 25 {
		req.Items = append(req.Items, client.DecryptRequest{Ciphertext: ctB.Ciphertext})
	}
	if st, raw := e.call("POST", "/v1/kms/decrypt-batch", tok, req); st != 200 {
		t.Fatalf("decrypt-batch: %d %s", st, raw)
	}
	select {
	case a := <-seen:
		if !strings.Contains(a.Summary, "denied requests (permission_denied)") {
			t.Errorf("alert %+v", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("25 denied batch items raised no denied_burst alert")
	}
	// The metrics count the denied items as authorization failures.
	st, raw := e.call("GET", "/metrics", "", nil)
	if st != 200 || !strings.Contains(string(raw), `coffer_auth_failures_total{reason="permission_denied"} 25`) {
		t.Fatalf("metrics (%d) do not count 25 denied items:\n%s", st, grep(string(raw), "coffer_auth_failures_total"))
	}
	if !strings.Contains(string(raw), `coffer_batch_items_total{action="kms:Decrypt",code="permission_denied"} 25`) {
		t.Fatalf("metrics do not count the batch items:\n%s", grep(string(raw), "coffer_batch_items_total"))
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// newIAMEnvWith is newIAMEnv with server options of the test's choosing.
func newIAMEnvWith(t *testing.T, opt func(*server.Options)) *iamEnv {
	t.Helper()
	e := &iamEnv{t: t, rec: &memRecorder{}}
	e.now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	s := sys.New(barrier.New(inmem.New()), e.now)
	o := server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AuthLimit: authlimit.New(authlimit.Config{Burst: 1000}), Audit: e.rec}
	opt(&o)
	ts := httptest.NewServer(server.New(s, o))
	t.Cleanup(ts.Close)
	e.url = ts.URL
	var ir client.InitResponse
	e.must("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.must("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken
	return e
}
