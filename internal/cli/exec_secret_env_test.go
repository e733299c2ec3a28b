package cli

import (
	"slices"
	"strings"
	"testing"
)

// Every variable that gives coffer a credential, or the means to get one,
// is kept from COMMAND unless passed; other variables are inherited.
func TestWithoutCredentials(t *testing.T) {
	creds := []string{"COFFER_TOKEN", "COFFER_ACCESS_KEY_ID", "COFFER_SECRET_ACCESS_KEY", "COFFER_ROLE",
		"COFFER_TOKEN_FILE", "COFFER_CLUSTER", "COFFER_CLIENT_CERT", "COFFER_CLIENT_KEY"}
	var env []string
	for _, k := range creds {
		env = append(env, k+"=v")
	}
	env = append(env, "HOME=/home/app", "COFFER_ADDR=https://coffer:8200", "COFFER_TOKEN_CACHE=0")
	got := withoutCredentials(slices.Clone(env), false, nil)
	if want := []string{"HOME=/home/app", "COFFER_ADDR=https://coffer:8200", "COFFER_TOKEN_CACHE=0"}; !slices.Equal(got, want) {
		t.Fatalf("env %v, want %v", got, want)
	}
	got = withoutCredentials(slices.Clone(env), false, []string{"COFFER_ROLE", "COFFER_TOKEN_FILE"})
	if !slices.Contains(got, "COFFER_ROLE=v") || !slices.Contains(got, "COFFER_TOKEN_FILE=v") || slices.Contains(got, "COFFER_TOKEN=v") || len(got) != 5 {
		t.Fatalf("passing two by name: %v", got)
	}
	if got := withoutCredentials(slices.Clone(env), true, nil); !slices.Equal(got, env) {
		t.Fatalf("--pass-credentials: %v", got)
	}
	for _, k := range creds {
		if err := checkPassEnv([]string{k}); err != nil {
			t.Errorf("--pass-env %s: %v", k, err)
		}
	}
	if err := checkPassEnv([]string{"COFFER_ADDR"}); err == nil || !strings.Contains(err.Error(), "not a credential variable") {
		t.Fatalf("--pass-env COFFER_ADDR: %v", err)
	}
}
