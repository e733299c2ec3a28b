package server

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// Every Coffer route of this package is under a namespace a Vault mount
// may not take: a route added under a new /v1/NAME/ fails here until NAME
// is reserved.
func TestVaultNamespacesCoverRoutes(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"(?:GET|POST|PUT|PATCH|DELETE|HEAD) /v1/([A-Za-z0-9._-]+)`)
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") || strings.HasPrefix(name, "vault") {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			n++
			if !cofferNamespaces[m[1]] {
				t.Errorf("%s: route under /v1/%s/ is not in cofferNamespaces", name, m[1])
			}
		}
	}
	if n < 50 {
		t.Fatalf("found only %d routes", n)
	}
}

// The probe catches a collision the namespace list would miss.
func TestVaultProbeMount(t *testing.T) {
	s := New(sys.New(barrier.New(inmem.New()), nil), Options{})
	for _, m := range []string{"keys", "secrets", "policies", "roles", "access-keys"} {
		if err := s.probeMount(m); err == nil {
			t.Errorf("probe of %q found no Coffer route", m)
		}
	}
	if err := s.probeMount("transit-x"); err != nil {
		t.Fatal(err)
	}
}
