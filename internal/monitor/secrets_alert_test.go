package monitor

import (
	"fmt"
	"testing"
)

// TestEnumerationOfSecrets: reading many secrets wrapped by one key is an
// enumeration; each record names the same key, so the rule counts the
// secrets (resources), not the key.
func TestEnumerationOfSecrets(t *testing.T) {
	s := normal()
	for i := range 60 {
		r := rec(3600+float64(i), "acc_b", "10.0.2.7", "secret:Read", fmt.Sprintf("secret/team-a/s%d", i), "")
		r.KeyID = "the-default-secrets-key"
		s = append(s, r)
	}
	if got := run(t, DefaultRules(), s); got[RuleEnumeration] == 0 {
		t.Fatalf("60 secrets read under one key: no enumeration alert (%v)", got)
	}
	// Reading one secret 60 times is no enumeration.
	s = normal()
	for i := range 60 {
		r := rec(3600+float64(i), "acc_b", "10.0.2.7", "secret:Read", "secret/team-a/s", "")
		r.KeyID = "the-default-secrets-key"
		s = append(s, r)
	}
	if got := run(t, DefaultRules(), s); got[RuleEnumeration] != 0 {
		t.Fatalf("one secret read 60 times: %v", got)
	}
}
