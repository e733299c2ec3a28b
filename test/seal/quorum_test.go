package seal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// generateRoot runs a generate-root attempt with shares and returns the
// decoded root token ("" and the error of the last share when refused).
func generateRoot(t testing.TB, c *client.Client, shares ...string) (string, error) {
	t.Helper()
	ctx := testCtx(t)
	st := must[*client.GenerateRootStatus](t, "GenerateRootStatus")(c.GenerateRootStatus(ctx))
	if st.Started {
		must[struct{}](t, "GenerateRootCancel")(struct{}{}, c.GenerateRootCancel(ctx))
	}
	if st.OTPLength < 16 {
		t.Fatalf("OTP length %d", st.OTPLength)
	}
	pad := make([]byte, st.OTPLength)
	rand.Read(pad)
	otp := base64.StdEncoding.EncodeToString(pad)
	a := must[*client.GenerateRootStatus](t, "GenerateRootStart")(c.GenerateRootStart(ctx, otp))
	sum := sha256.Sum256(pad)
	if !a.Started || a.Nonce == "" || a.OTPFingerprint != hex.EncodeToString(sum[:8]) {
		t.Fatalf("generate-root start: %+v (fingerprint of the pad %x)", a, sum[:8])
	}
	var r *client.GenerateRootStatus
	for i, sh := range shares {
		var err error
		r, err = c.GenerateRootSubmit(ctx, a.Nonce, sh)
		if err != nil {
			if i != len(shares)-1 {
				t.Fatalf("share %d of %d refused early: %v", i+1, len(shares), err)
			}
			return "", err
		}
		if r.Complete != (i == len(shares)-1) {
			t.Fatalf("after share %d of %d: complete=%t: %+v", i+1, len(shares), r.Complete, r)
		}
	}
	enc, err := base64.StdEncoding.DecodeString(r.EncodedToken)
	if err != nil || len(enc) != len(pad) {
		t.Fatalf("encoded token: %d bytes, %v", len(enc), err)
	}
	subtle.XORBytes(enc, enc, pad)
	return string(enc), nil
}

// TestGenerateRootRekey runs generate-root and rekey under a PKCS#11 seal
// with recovery shares: the generated token (XOR the one-time pad) is a
// working root token; recovery shares of another server are refused; a
// rekey to 4/3 hands out new recovery shares and the old ones stop
// working for generate-root and for a recovery unseal.
func TestGenerateRootRekey(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	h := newHSM(t, "coffer", "other")
	s := newServer(t, "quorum", h.env()...)
	s.seal = h.seal("coffer", "root-wrap", true).yaml()
	s.mustStart()
	ir := initAuto(t, s, "pkcs11", 3, 2)
	o := newServer(t, "foreign", h.env()...)
	o.seal = h.seal("other", "root-wrap", true).yaml()
	o.mustStart()
	foreign := initAuto(t, o, "pkcs11", 3, 2).RecoveryShares
	o.kill()

	c := s.client("")
	ctx := testCtx(t)

	// Foreign shares, all or mixed with one of ours, are refused.
	for name, shares := range map[string][]string{
		"foreign": {foreign[0], foreign[1]},
		"mixed":   {ir.RecoveryShares[0], foreign[2]},
	} {
		if tok, err := generateRoot(t, c, shares...); err == nil {
			t.Fatalf("generate-root with %s recovery shares issued a token (%d bytes)", name, len(tok))
		} else {
			t.Logf("%s shares refused: %v", name, err)
		}
	}

	tok, err := generateRoot(t, c, ir.RecoveryShares[2], ir.RecoveryShares[0])
	if err != nil {
		t.Fatal(err)
	}
	if tok == ir.RootToken {
		t.Fatal("generate-root returned the existing root token")
	}
	gen := s.client(tok)
	self := must[*client.TokenInfo](t, "LookupSelf")(gen.LookupSelf(ctx))
	if !self.Root {
		t.Fatalf("the generated token is not a root token: %+v", self)
	}
	must[*client.Key](t, "CreateKey with the generated token")(gen.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/generated"}))
	var d data
	d.write(t, gen, "alias/generated", "generated-root", 5)

	// Rekey the recovery shares to 4 of threshold 3.
	rk := must[*client.RekeyStatus](t, "RekeyStart")(c.RekeyStart(ctx, client.RekeyRequest{Shares: 4, Threshold: 3}))
	if rk.Kind != "recovery" || rk.Required != 2 || rk.Nonce == "" {
		t.Fatalf("rekey start: %+v", rk)
	}
	if _, err := c.RekeySubmit(ctx, rk.Nonce, foreign[0]); err == nil {
		if r, err := c.RekeySubmit(ctx, rk.Nonce, foreign[1]); err == nil && r.Complete {
			t.Fatal("rekey completed with foreign recovery shares")
		}
	}
	must[struct{}](t, "RekeyCancel")(struct{}{}, c.RekeyCancel(ctx))
	rk = must[*client.RekeyStatus](t, "RekeyStart")(c.RekeyStart(ctx, client.RekeyRequest{Shares: 4, Threshold: 3}))
	must[*client.RekeyStatus](t, "RekeySubmit")(c.RekeySubmit(ctx, rk.Nonce, ir.RecoveryShares[1]))
	done := must[*client.RekeyStatus](t, "RekeySubmit")(c.RekeySubmit(ctx, rk.Nonce, ir.RecoveryShares[2]))
	if !done.Complete || len(done.Shares) != 4 {
		t.Fatalf("rekey: complete=%t, %d shares", done.Complete, len(done.Shares))
	}
	if st := status(t, c); st.RecoveryShares != 4 || st.RecoveryThreshold != 3 || st.Type != "pkcs11" {
		t.Fatalf("after the rekey: %s", describe(st))
	}
	if _, err := generateRoot(t, c, ir.RecoveryShares[0], ir.RecoveryShares[1], ir.RecoveryShares[2]); err == nil {
		t.Fatal("the recovery shares from before the rekey still generate a root token")
	}
	tok2, err := generateRoot(t, c, done.Shares[3], done.Shares[0], done.Shares[2])
	if err != nil {
		t.Fatalf("generate-root with the new recovery shares: %v", err)
	}
	if self := must[*client.TokenInfo](t, "LookupSelf")(s.client(tok2).LookupSelf(ctx)); !self.Root {
		t.Fatal("the second generated token is not root")
	}

	// A manual seal: the old shares do not unseal, 3 new ones do.
	root := s.client(ir.RootToken)
	if err := root.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Unseal(ctx, client.UnsealRequest{Share: ir.RecoveryShares[0]})
	_, _ = c.Unseal(ctx, client.UnsealRequest{Share: ir.RecoveryShares[1]})
	_, _ = c.Unseal(ctx, client.UnsealRequest{Share: ir.RecoveryShares[2]})
	if st := status(t, c); !st.Sealed {
		t.Fatal("the recovery shares from before the rekey unsealed the server")
	}
	must[*client.SealStatus](t, "Unseal reset")(c.Unseal(ctx, client.UnsealRequest{Reset: true}))
	unsealShares(t, c, done.Shares[1], done.Shares[2], done.Shares[3])
	d.verify(t, gen)

	// Survives a restart: auto-unsealed, the generated token still works.
	s.restart()
	waitUnsealed(t, c, patience())
	d.verify(t, gen)
	if st := status(t, c); st.RecoveryShares != 4 || st.RecoveryThreshold != 3 {
		t.Fatalf("after restart: %s", describe(st))
	}
}
