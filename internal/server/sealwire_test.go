package server

import (
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/seal/tpm"
	"github.com/cofferkms/coffer/internal/seal/transit"
)

// TestSealConfigChecks: one seal per section, no TPM seal for replicas on
// etcd, no previous seal of the seal's own type; each refused before
// anything runs, with a message that names the fix.
func TestSealConfigChecks(t *testing.T) {
	tpmCfg := &SealConfig{TPM2: &tpm.Config{Device: "/dev/tpmrm0"}}
	transitCfg := &SealConfig{Transit: &transit.Config{Address: "https://127.0.0.1:1", Key: "alias/unseal", TokenFile: "/nonexistent/token"}}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"two seals", Config{Seal: &SealConfig{TPM2: tpmCfg.TPM2, Transit: transitCfg.Transit}}, "name one seal"},
		{"tpm on etcd", func() Config {
			c := Config{Seal: tpmCfg}
			c.Storage.Etcd = &EtcdConfig{}
			return c
		}(), "replicas on storage.etcd"},
		{"same type twice", Config{Seal: tpmCfg, PreviousSeal: &SealConfig{TPM2: &tpm.Config{Device: "/dev/tpm0"}}}, "same type"},
		{"bad tpm pcr", Config{Seal: &SealConfig{TPM2: &tpm.Config{PCRs: []int{99}}}}, "seal.tpm2"},
	}
	for _, c := range cases {
		cur, prev, err := openSeals(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
		if cur != nil || prev != nil {
			t.Errorf("%s: seals returned with an error", c.name)
		}
	}
	// Empty sections are Shamir.
	if cur, prev, err := openSeals(Config{Seal: &SealConfig{}}); err != nil || cur != nil || prev != nil {
		t.Fatalf("empty seal section: %v", err)
	}
}
