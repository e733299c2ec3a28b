package cli

import (
	"slices"
	"strings"

	"github.com/cofferkms/coffer/client"
)

// credentialVariables are the environment variables that give coffer
// itself a credential, or the means to get one (a role and a
// service-account token file, a client certificate): COMMAND does not
// inherit them unless --pass-credentials passes them all or --pass-env
// names one. The command gets its secrets, not the power of the
// credential that read them.
var credentialVariables = []string{client.EnvToken, client.EnvAccessKeyID, client.EnvSecretAccessKey, client.EnvRole,
	client.EnvTokenFile, client.EnvCluster, client.EnvClientCert, client.EnvClientKey}

// credentialVariable reports whether name is one of credentialVariables.
func credentialVariable(name string) bool { return slices.Contains(credentialVariables, name) }

// withoutCredentials removes the credential variables from env, except
// those named in pass (or all of them when passAll).
func withoutCredentials(env []string, passAll bool, pass []string) []string {
	if passAll {
		return env
	}
	return slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return credentialVariable(k) && !slices.Contains(pass, k)
	})
}

// checkPassEnv checks that every --pass-env names a credential variable
// (any other variable is inherited anyway).
func checkPassEnv(pass []string) error {
	for _, p := range pass {
		if !credentialVariable(p) {
			return usageErrorf("--pass-env %s: not a credential variable; COMMAND inherits it anyway (the credential variables: %s)", p, strings.Join(credentialVariables, ", "))
		}
	}
	return nil
}

// cofferVariable reports whether a variable name configures a Coffer
// client (COFFER_ADDR, COFFER_TOKEN, ...). Derived from a field name a
// secret's writer chose, it would point COMMAND's own Coffer calls at
// another server or credential, so it must be named explicitly.
func cofferVariable(name string) bool { return strings.HasPrefix(name, "COFFER_") }
