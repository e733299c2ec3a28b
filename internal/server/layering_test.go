package server

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestServicesDoNotImportTheWireTypes keeps the services free of the
// client's REST wire types: they speak their own, and each door (this one
// in keyconv.go, iamconv.go, sysconv.go) converts. A service that imported
// the client would make every other door translate through Coffer's JSON
// shapes again. The rotation webhook signature lives in
// internal/webhooksig, which the secrets service signs with and the
// client re-exports for rotators.
func TestServicesDoNotImportTheWireTypes(t *testing.T) {
	for _, pkg := range []string{"keys", "iam", "sys", "secrets", "auth", "policy", "barrier", "audit"} {
		files, err := filepath.Glob(filepath.Join("..", pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", pkg, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range ast.Imports {
				if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/cofferkms/coffer/client" {
					t.Errorf("%s imports %s: give the service its own types and convert in the door", f, p)
				}
			}
		}
	}
}
