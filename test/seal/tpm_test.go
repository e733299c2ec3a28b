package seal

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
)

// tpmPCR is the PCR the test binds the root key to: 16, the debug PCR,
// which software may extend and which a reboot (swtpm restart) resets.
const tpmPCR = 16

func tpmSeal(sw *swtpm) string {
	return fmt.Sprintf("  tpm2:\n    device: %s\n    pcrs: [%d]\n", sw.device(), tpmPCR)
}

// TestTPM seals the root key to a swtpm bound to PCR 16: a reboot of the
// TPM and a restart of coffer unseal by themselves; after the PCR is
// extended (the boot state changed) coffer stays sealed and says the PCRs
// changed; after the next reboot (PCRs back to their sealed values) it
// unseals again with every ciphertext intact.
func TestTPM(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	sw := newSwtpm(t)
	s := newServer(t, "tpm")
	s.seal = tpmSeal(sw)
	s.mustStart()
	ir := initAuto(t, s, "tpm2", 3, 2)
	c := s.client(ir.RootToken)
	must[*client.Key](t, "CreateKey")(c.CreateKey(testCtx(t), client.CreateKeyRequest{Alias: "alias/e2e"}))
	var d data
	d.write(t, c, "alias/e2e", "tpm", 30)

	// A reboot: swtpm restarts (same state), coffer restarts.
	s.kill()
	sw.restart()
	s.mustStart()
	waitUnsealed(t, c, patience())
	d.verify(t, c)
	st := status(t, c)
	if st.Type != "tpm2" || st.Seal == nil || st.Seal.Type != "tpm2" || st.Seal.UnsealSeconds <= 0 {
		t.Fatalf("after the reboot: %s", describe(st))
	}
	t.Logf("tpm2 auto-unseal took %.3f s; seal info %v", st.Seal.UnsealSeconds, st.Seal.Info)
	d.write(t, c, "alias/e2e", "tpm-rebooted", 10)

	// The boot state changes: PCR 16 extended.
	s.kill()
	sw.extendPCR(tpmPCR)
	s.mustStart()
	st = sealedWithError(t, c)
	msg := st.Seal.LastUnsealError
	if !strings.Contains(strings.ToUpper(msg), "PCR") {
		t.Errorf("sealed, but the error does not say the PCRs changed: %q", msg)
	}
	t.Logf("PCR %d extended: sealed: retrying=%t: %s", tpmPCR, st.Seal.Retrying, msg)
	// Not even a quorum of recovery shares opens it: they authorise, the
	// TPM holds the key.
	_, _ = c.Unseal(testCtx(t), client.UnsealRequest{Share: ir.RecoveryShares[0]})
	if _, err := c.Unseal(testCtx(t), client.UnsealRequest{Share: ir.RecoveryShares[1]}); err == nil && !status(t, c).Sealed {
		t.Fatal("recovery shares unsealed while the TPM refuses the key")
	}

	// The next reboot resets the PCR: unsealed again, nothing lost.
	s.kill()
	sw.restart()
	s.mustStart()
	waitUnsealed(t, c, patience())
	d.verify(t, c)
}
