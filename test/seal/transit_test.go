package seal

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
)

// unsealPolicy allows exactly what the transit seal needs on the
// unsealer: Encrypt and Decrypt on alias/unseal with the seal's purpose in
// the encryption context.
const unsealPolicy = `description: the transit seal of the main coffer
statements:
  - sid: UnsealRootKey
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: [alias/unseal]
    conditions:
      StringEquals:
        context.coffer-seal: root-key
`

// unsealer is the second coffer the transit seal wraps the root key with.
type unsealer struct {
	s     *server
	share string // its one unseal share
	token string // a token carrying unsealPolicy
}

// newUnsealer starts and initializes a coffer server with TLS (a test CA),
// creates alias/unseal, the policy and a token for the seal.
func newUnsealer(t testing.TB) *unsealer {
	t.Helper()
	s := newServer(t, "unsealer")
	s.tls = newTLS(t)
	s.mustStart()
	c := s.client("")
	ctx := testCtx(t)
	ir := must[*client.InitResponse](t, "Init unsealer")(c.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1}))
	u := &unsealer{s: s, share: ir.Shares[0]}
	u.unseal(t)
	c.SetToken(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/unseal"}))
	must[*client.Policy](t, "PutPolicy")(c.PutPolicy(ctx, "unseal", client.PutPolicyRequest{Document: unsealPolicy}))
	u.token = must[*client.CreateTokenResponse](t, "CreateToken")(c.CreateToken(ctx, client.CreateTokenRequest{Policies: []string{"unseal"}, TTL: "2h"})).Token
	return u
}

func (u *unsealer) unseal(t testing.TB) {
	t.Helper()
	unsealShares(t, u.s.client(""), u.share)
}

// seal is the transit section for a main server, with the token in a
// 0600 file.
func (u *unsealer) seal(t testing.TB) string {
	t.Helper()
	tf := filepath.Join(t.TempDir(), "unsealer-token")
	writeFile(t, tf, u.token+"\n")
	return fmt.Sprintf("  transit:\n    address: %s\n    key: alias/unseal\n    ca_cert_file: %s\n    token_file: %s\n", u.s.url(), u.s.tls.ca, tf)
}

// TestTransit wraps the root key with a key in a second coffer: init and
// a restart unseal by themselves; with the unsealer down the restarted
// server stays sealed, says it cannot reach it and keeps retrying; once
// the unsealer is back (same address) it unseals by itself, within the
// 30 s backoff, with no operator action.
func TestTransit(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	u := newUnsealer(t)
	s := newServer(t, "transit")
	s.seal = u.seal(t)
	s.mustStart()
	ir := initAuto(t, s, "transit", 3, 2)
	c := s.client(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(testCtx(t), client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "transit", 30)

	s.restart()
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	if st := status(t, c); st.Type != "transit" || st.Seal.Type != "transit" || st.Seal.UnsealSeconds <= 0 {
		t.Fatalf("after the restart: %s", describe(st))
	}

	// The unsealer goes away; the main server restarts meanwhile.
	u.s.kill()
	s.restart()
	st := waitStatus(t, c, patience(), func(st *client.SealStatus) error {
		if st.Seal == nil || st.Seal.Failures < 2 {
			return errorf("fewer than 2 failed attempts")
		}
		return nil
	})
	msg := st.Seal.LastUnsealError
	if !st.Sealed || !st.Seal.Retrying {
		t.Fatalf("the unsealer is down: %s; want sealed and retrying", describe(st))
	}
	if !strings.Contains(msg, proc.HostPort(u.s.port)) && !strings.Contains(strings.ToLower(msg), "reach") && !strings.Contains(strings.ToLower(msg), "connect") {
		t.Errorf("the error does not say the unsealer cannot be reached: %q", msg)
	}
	t.Logf("unsealer down: %s", msg)
	if v := metricLine(metrics(t, s), `coffer_auto_unseal_failing{type="transit"}`); v != "1" {
		t.Errorf(`coffer_auto_unseal_failing{type="transit"} = %q while the unsealer is down, want 1`, v)
	}

	// The unsealer is back (and unsealed by its operator): the main server
	// unseals by itself.
	u.s.mustStart()
	u.unseal(t)
	back := time.Now()
	waitUnsealed(t, c, proc.Patience(40*time.Second))
	t.Logf("unsealed by itself %s after the unsealer came back", time.Since(back).Round(100*time.Millisecond))
	if since := time.Since(back); since > 35*time.Second {
		t.Errorf("took %s, more than the 30 s backoff allows", since)
	}
	d.verify(t, c)
	st = status(t, c)
	if st.Seal.LastUnsealError != "" || st.Seal.Failures < 2 {
		t.Errorf("after unsealing: %s", describe(st))
	}
	if v := metricLine(metrics(t, s), `coffer_auto_unseal_failing{type="transit"}`); v != "0" {
		t.Errorf(`coffer_auto_unseal_failing{type="transit"} = %q once unsealed, want 0`, v)
	}
}
