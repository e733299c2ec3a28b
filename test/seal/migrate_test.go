package seal

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// migrate submits shares to a pending migration; the last answer must be
// Complete and the earlier ones not.
func migrate(t testing.TB, c *client.Client, shares []string, n, k int) *client.MigrateSealResponse {
	t.Helper()
	var r *client.MigrateSealResponse
	for i, sh := range shares {
		r = must[*client.MigrateSealResponse](t, "MigrateSeal")(c.MigrateSeal(testCtx(t), client.MigrateSealRequest{Share: sh, Shares: n, Threshold: k}))
		if last := i == len(shares)-1; r.Complete != last {
			t.Fatalf("migrate-seal after share %d of %d: complete=%t: %s", i+1, len(shares), r.Complete, describe(&r.SealStatus))
		}
	}
	return r
}

// unsealShares submits unseal shares and fails unless the server is
// unsealed after the last.
func unsealShares(t testing.TB, c *client.Client, shares ...string) {
	t.Helper()
	var st *client.SealStatus
	for _, sh := range shares {
		st = must[*client.SealStatus](t, "Unseal")(c.Unseal(testCtx(t), client.UnsealRequest{Share: sh}))
	}
	if st.Sealed {
		t.Fatalf("still sealed after %d shares: %s", len(shares), describe(st))
	}
	waitUnsealed(t, c, patience())
}

// TestMigrateBothWays moves a store from Shamir to a PKCS#11 seal and
// back, with data written before and after every step and a restart after
// each: nothing written at any step is lost, plain unseal is refused
// while a migration is pending, and each direction hands out the new
// kind of shares.
func TestMigrateBothWays(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	h := newHSM(t, "coffer")
	s := newServer(t, "migrate", h.env()...)
	s.mustStart()
	c := s.client("")
	ctx := testCtx(t)
	ir := must[*client.InitResponse](t, "Init")(c.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2}))
	if ir.Type != "shamir" && ir.Type != "" || len(ir.Shares) != 3 || len(ir.RecoveryShares) != 0 {
		t.Fatalf("shamir init: type %q, %d shares, %d recovery shares", ir.Type, len(ir.Shares), len(ir.RecoveryShares))
	}
	unsealShares(t, c, ir.Shares[0], ir.Shares[2])
	c.SetToken(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "shamir", 20)

	// Shamir -> pkcs11.
	s.seal = h.seal("coffer", "root-wrap", true).yaml()
	s.restart()
	st := status(t, c)
	if !st.Sealed || !st.MigrationPending || st.Type != "shamir" || st.ConfiguredType != "pkcs11" {
		t.Fatalf("restarted with a pkcs11 seal over a Shamir store: %s", describe(st))
	}
	if v := metricLine(metrics(t, s), "coffer_seal_migration_pending"); v != "1" {
		t.Errorf("coffer_seal_migration_pending = %q during a pending migration, want 1", v)
	}
	_, err := c.Unseal(ctx, client.UnsealRequest{Share: ir.Shares[0]})
	if code, class := apiCode(err); code != http.StatusConflict || class != "migration_pending" {
		t.Fatalf("plain unseal during a pending migration: %v (status %d, code %q); want 409 migration_pending", err, code, class)
	}
	if st := status(t, c); st.Progress != 0 {
		t.Fatalf("the refused unseal share was kept: %s", describe(st))
	}
	// Interrupted: one share of the quorum, then a crash. The restarted
	// server still has the migration pending, with no share kept.
	if r, err := c.MigrateSeal(ctx, client.MigrateSealRequest{Share: ir.Shares[0]}); err != nil || r.Complete || r.Progress != 1 {
		t.Fatalf("first migration share: %v, %s", err, describe(&r.SealStatus))
	}
	s.restart()
	if st := status(t, c); !st.Sealed || !st.MigrationPending || st.Type != "shamir" || st.Progress != 0 {
		t.Fatalf("after a crash in the middle of the migration: %s", describe(st))
	}
	r := migrate(t, c, ir.Shares[1:3], 0, 0)
	if len(r.RecoveryShares) != 3 || len(r.Shares) != 0 || r.Sealed || r.Type != "pkcs11" || r.MigrationPending {
		t.Fatalf("to pkcs11: %d recovery shares, %d unseal shares: %s", len(r.RecoveryShares), len(r.Shares), describe(&r.SealStatus))
	}
	recovery := r.RecoveryShares
	if v := metricLine(metrics(t, s), "coffer_seal_migration_pending"); v != "0" {
		t.Errorf("coffer_seal_migration_pending = %q after the migration, want 0", v)
	}
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	d.write(t, c, "alias/e2e", "pkcs11", 20)

	// Under pkcs11: a restart unseals by itself.
	s.restart()
	waitUnsealed(t, c, patience())
	if st := status(t, c); st.Type != "pkcs11" || st.RecoveryShares != 3 || st.RecoveryThreshold != 2 {
		t.Fatalf("after the migration to pkcs11: %s", describe(st))
	}
	d.verify(t, c)
	d.write(t, c, "alias/e2e", "pkcs11-restarted", 20)

	// pkcs11 -> Shamir: the HSM is needed as previous_seal to unwrap.
	s.prevSeal, s.seal = s.seal, ""
	s.restart()
	st = status(t, c)
	if !st.Sealed || !st.MigrationPending || st.Type != "pkcs11" || st.ConfiguredType != "shamir" {
		t.Fatalf("restarted with seal none and previous_seal pkcs11: %s", describe(st))
	}
	if _, err := c.Unseal(ctx, client.UnsealRequest{Share: recovery[0]}); err == nil {
		t.Fatal("plain unseal with a recovery share succeeded during a pending migration")
	}
	r = migrate(t, c, recovery[1:], 5, 3)
	if len(r.Shares) != 5 || len(r.RecoveryShares) != 0 || r.Sealed || r.Type != "shamir" {
		t.Fatalf("to shamir: %d unseal shares, %d recovery shares: %s", len(r.Shares), len(r.RecoveryShares), describe(&r.SealStatus))
	}
	newShares := r.Shares
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	d.write(t, c, "alias/e2e", "back-to-shamir", 20)

	// Without previous_seal: sealed until 3 of the 5 new shares; the
	// shares of the first init no longer open it.
	s.prevSeal = ""
	s.restart()
	st = status(t, c)
	if !st.Sealed || st.MigrationPending || st.Type != "shamir" || st.Threshold != 3 || st.Shares != 5 {
		t.Fatalf("restarted under Shamir after the migration: %s", describe(st))
	}
	for _, sh := range ir.Shares {
		_, _ = c.Unseal(ctx, client.UnsealRequest{Share: sh})
	}
	if !status(t, c).Sealed {
		t.Fatal("the unseal shares from before the migrations still unseal")
	}
	must[*client.SealStatus](t, "Unseal reset")(c.Unseal(ctx, client.UnsealRequest{Reset: true}))
	unsealShares(t, c, newShares[4], newShares[0], newShares[2])
	d.verify(t, c)
	t.Logf("%d ciphertexts from 4 steps decrypt after shamir -> pkcs11 -> shamir", len(d.items))
}

// TestMigrateWrongPIN starts a migration to a pkcs11 seal whose PIN is
// wrong: the migration fails on the quorum's last share, nothing is
// committed, and the old configuration with the old shares still unseals.
func TestMigrateWrongPIN(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	h := newHSM(t, "coffer")
	s := newServer(t, "migrate-pin", h.env()...)
	s.mustStart()
	c := s.client("")
	ctx := testCtx(t)
	ir := must[*client.InitResponse](t, "Init")(c.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2}))
	unsealShares(t, c, ir.Shares[0], ir.Shares[1])
	c.SetToken(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "shamir", 20)

	writeFile(t, h.pinFile, badPIN+"\n")
	s.seal = h.seal("coffer", "root-wrap", true).yaml()
	s.restart()
	if st := status(t, c); !st.MigrationPending {
		t.Fatalf("no pending migration: %s", describe(st))
	}
	r, err := c.MigrateSeal(ctx, client.MigrateSealRequest{Share: ir.Shares[2]})
	if err != nil || r.Complete {
		t.Fatalf("first share: %v, %+v", err, r)
	}
	r, err = c.MigrateSeal(ctx, client.MigrateSealRequest{Share: ir.Shares[0]})
	if err == nil || r.Complete {
		t.Fatalf("a migration to a seal whose PIN is wrong succeeded: %+v", r)
	}
	if strings.Contains(err.Error(), badPIN) || strings.Contains(err.Error(), hsmPIN) {
		t.Error("the migration error shows a PIN")
	}
	t.Logf("migration with a wrong PIN: %v", err)
	st := status(t, c)
	if !st.Sealed || st.Type != "shamir" || !st.MigrationPending {
		t.Fatalf("after the failed migration: %s", describe(st))
	}

	// Back to the old configuration: the old shares unseal, all data is there.
	s.seal = ""
	s.restart()
	if st := status(t, c); st.Type != "shamir" || st.MigrationPending || st.Threshold != 2 {
		t.Fatalf("the old configuration after a failed migration: %s", describe(st))
	}
	unsealShares(t, c, ir.Shares[1], ir.Shares[2])
	d.verify(t, c)

	// And the migration works once the PIN is right.
	writeFile(t, h.pinFile, hsmPIN+"\n")
	s.seal = h.seal("coffer", "root-wrap", true).yaml()
	s.restart()
	r = migrate(t, c, ir.Shares[:2], 0, 0)
	if len(r.RecoveryShares) != 3 {
		t.Fatalf("migration with the right PIN: %s", describe(&r.SealStatus))
	}
	waitUnsealed(t, c, patience())
	d.verify(t, c)
}

// TestMigrateAutoToAuto moves a store from a PKCS#11 seal to a TPM seal
// (pkcs11 as previous_seal, recovery shares as the quorum): the recovery
// shares stay, the restarted server unseals through the TPM alone (the
// HSM's token directory removed), and the recovery shares still unseal it
// after a manual seal.
func TestMigrateAutoToAuto(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	h := newHSM(t, "coffer")
	sw := newSwtpm(t)
	s := newServer(t, "migrate-auto", h.env()...)
	s.seal = h.seal("coffer", "root-wrap", true).yaml()
	s.mustStart()
	ir := initAuto(t, s, "pkcs11", 3, 2)
	c := s.client(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(testCtx(t), client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "pkcs11", 20)

	s.prevSeal, s.seal = s.seal, fmt.Sprintf("  tpm2:\n    device: %s\n", sw.device())
	s.restart()
	if st := status(t, c); !st.MigrationPending || st.Type != "pkcs11" || st.ConfiguredType != "tpm2" {
		t.Fatalf("pkcs11 -> tpm2 pending: %s", describe(st))
	}
	r := migrate(t, c, ir.RecoveryShares[1:], 0, 0)
	if r.Type != "tpm2" || len(r.Shares) != 0 || len(r.RecoveryShares) != 0 || r.Sealed {
		t.Fatalf("pkcs11 -> tpm2: %d unseal shares, %d new recovery shares: %s", len(r.Shares), len(r.RecoveryShares), describe(&r.SealStatus))
	}
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	d.write(t, c, "alias/e2e", "tpm2", 20)

	// The HSM is no longer needed.
	s.prevSeal = ""
	if err := os.RemoveAll(h.tokenDir); err != nil {
		t.Fatal(err)
	}
	s.restart()
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	if st := status(t, c); st.Type != "tpm2" || st.RecoveryShares != 3 || st.RecoveryThreshold != 2 {
		t.Fatalf("after pkcs11 -> tpm2: %s", describe(st))
	}
	if err := c.Seal(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	unsealShares(t, s.client(""), ir.RecoveryShares[0], ir.RecoveryShares[2])
	d.verify(t, c)
}
