package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditVerifyHead: verify reports a log whose oldest file is missing,
// and accepts it when --first-seq declares the cut (retention).
func TestAuditVerifyHead(t *testing.T) {
	dir := filepath.Join("..", "audit", "testdata", "format1")
	pub := filepath.Join(dir, "pubkey")
	all, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(all) != 3 {
		t.Fatalf("want 3 fixture files, got %v", all)
	}
	code, out, errOut := runCLI(t, "", append([]string{"audit", "verify", "--pubkey", pub}, all...)...)
	if code != 0 || !strings.Contains(out, "OK: 70 records") {
		t.Fatalf("complete log: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "", append([]string{"audit", "verify", "--pubkey", pub}, all[1:]...)...)
	if code != 1 || !strings.Contains(errOut, "truncated") || !strings.Contains(errOut, "--first-seq") {
		t.Fatalf("oldest file missing: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "", append([]string{"audit", "verify", "--pubkey", pub, "--first-seq", "30"}, all[1:]...)...)
	if code != 0 || !strings.Contains(out, "seq 30..75") {
		t.Fatalf("retention cut declared: exit %d\n%s%s", code, out, errOut)
	}
}
