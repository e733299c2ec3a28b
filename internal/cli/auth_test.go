package cli

import (
	"errors"
	"strings"
	"testing"
)

func TestCredentialOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		creds credentials
		n     int    // options wanted
		err   string // usage error wanted
	}{
		{name: "nothing", creds: credentials{}},
		{name: "token", creds: credentials{token: "t"}, n: 1},
		{name: "token and role", creds: credentials{token: "t", role: "r"}, n: 2},
		{name: "access key", creds: credentials{accessKeyID: "id", secretAccessKey: "s"}, n: 1},
		{name: "access key and role", creds: credentials{accessKeyID: "id", secretAccessKey: "s", role: "r"}, n: 2},
		{name: "token wins over access key", creds: credentials{token: "t", accessKeyID: "id", secretAccessKey: "s"}, n: 1},
		{name: "kubernetes", creds: credentials{role: "r", tokenFile: "f", cluster: "c"}, n: 1},
		{name: "client certificate", creds: credentials{clientCert: "c", clientKey: "k"}, n: 1},
		{name: "client certificate and role", creds: credentials{clientCert: "c", clientKey: "k", role: "r"}, n: 2},
		{name: "id without secret", creds: credentials{accessKeyID: "id"}, err: "go together"},
		{name: "secret without id", creds: credentials{secretAccessKey: "s"}, err: "go together"},
		{name: "token file without role", creds: credentials{tokenFile: "f"}, err: "COFFER_TOKEN_FILE needs COFFER_ROLE"},
		{name: "role alone", creds: credentials{role: "r"}, err: "COFFER_ROLE needs a credential"},
		{name: "certificate without key", creds: credentials{clientCert: "c"}, err: "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.creds.options()
			if tc.err != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want a usage error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(opts) != tc.n {
				t.Errorf("%d options, want %d", len(opts), tc.n)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"cft_abc-DEF_123": "cft_abc-DEF_123",
		"a b":             "'a b'",
		"it's":            `'it'\''s'`,
		"":                "''",
		"$(rm -rf /)":     "'$(rm -rf /)'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
