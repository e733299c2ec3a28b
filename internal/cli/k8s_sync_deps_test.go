package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoKubeScheme: the coffer binary must not link
// k8s.io/client-go/kubernetes/scheme. Its init registers every Kubernetes
// API type (the typed clientset, the informer factories, dynamicinformer,
// leaderelection and record all pull it in): that took an idle
// `coffer server --dev` from 31 to 47 MiB of RSS, past the 40 MiB of
// test/e2e TestMemory, for a controller most deployments never run.
// coffer k8s sync talks to Kubernetes through the dynamic client only.
func TestBinaryLinksNoKubeScheme(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cofferkms/coffer/cmd/coffer").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list listed %d packages: %s", len(deps), out)
	}
	for _, p := range deps {
		if p == "k8s.io/client-go/kubernetes/scheme" {
			t.Fatal("cmd/coffer links k8s.io/client-go/kubernetes/scheme (every Kubernetes API type): use the dynamic client and k8s.io/api types only")
		}
	}
}
