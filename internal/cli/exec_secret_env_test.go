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

// Every name a field must not become unless named: each startup variable
// (loader, shell, interpreter) and each COFFER_ variable; names that only
// look alike are delivered.
func TestDerivedNameRefusals(t *testing.T) {
	for _, n := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "GLIBC_TUNABLES",
		"PATH", "BASH_ENV", "ENV", "ZDOTDIR", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH", "GCONV_PATH",
		"NODE_OPTIONS", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB",
		"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "LUA_INIT", "LUA_INIT_5_4", "OPENSSL_CONF"} {
		if !startupVariable(n) {
			t.Errorf("%s is not refused as a startup variable", n)
		}
	}
	for _, n := range []string{"COFFER_ADDR", "COFFER_TOKEN", "COFFER_CACERT", "COFFER_SKIP_VERIFY", "COFFER_TOKEN_CACHE", "COFFER_"} {
		if !cofferVariable(n) {
			t.Errorf("%s is not refused as a COFFER_ variable", n)
		}
	}
	for _, n := range []string{"PASSWORD", "DB_HOST", "COFFERADDR", "MY_COFFER_ADDR", "PATHS", "XLD_PRELOAD", "LUA_PATH_X", "ENVIRONMENT"} {
		if startupVariable(n) || cofferVariable(n) {
			t.Errorf("%s is refused", n)
		}
	}
}
