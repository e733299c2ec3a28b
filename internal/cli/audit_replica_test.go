package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/audit"
)

// writeReplicaTrail writes n records through replica's trail in dir, the
// i-th at base+step*i seconds.
func writeReplicaTrail(t *testing.T, dir, replica string, k *audit.Keys, n int, base, step int64) {
	t.Helper()
	tr, err := audit.Open(audit.Options{Dir: dir, Keys: k, ReplicaID: replica, CheckpointEvery: 7, MaxFileSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(n) {
		r := &audit.Record{Time: time.Unix(base+step*i, 0).UTC(), Action: "kms:Encrypt", Resource: "alias/" + replica,
			Principal: audit.Principal{Kind: "root"}, Outcome: "ok"}
		if err := tr.Record(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAuditVerifyAndSearchReplicas: verify takes directories holding
// several replicas' trails and reports each; --replica selects and
// reports a missing one; a record swapped between the trails fails,
// naming the replica; search merges the trails by time.
func TestAuditVerifyAndSearchReplicas(t *testing.T) {
	dir := t.TempDir()
	k, err := audit.LoadOrCreateKeys(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	writeReplicaTrail(t, dir, "coffer-0", k, 40, 1800000000, 2)
	other := t.TempDir()
	writeReplicaTrail(t, other, "coffer-1", k, 40, 1800000001, 2)
	pub := k.PublicKeyString()

	code, out, errOut := runCLI(t, "", "audit", "verify", "--pubkey", pub, dir, other)
	if code != 0 || !strings.Contains(out, "replica coffer-0: OK: 40 records") || !strings.Contains(out, "replica coffer-1: OK: 40 records") {
		t.Fatalf("two trails: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "", "audit", "verify", "--pubkey", "coffer-1="+pub, "--replica", "coffer-1", "--replica", "coffer-2", dir, other)
	if code != 1 || !strings.Contains(out, "replica coffer-1: OK") || strings.Contains(out, "coffer-0") ||
		!strings.Contains(errOut, "replica coffer-2: FAILED") || !strings.Contains(errOut, "no audit file of replica") {
		t.Fatalf("selection: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "", "audit", "verify", "--replica", "../etc", dir)
	if code == 0 || !strings.Contains(errOut, "--replica") {
		t.Fatalf("a bad replica id: exit %d\n%s%s", code, out, errOut)
	}

	// Swap the 5th line of the two trails' first files.
	f0, _ := audit.ReplicaFiles(dir, "coffer-0")
	f1, _ := audit.ReplicaFiles(other, "coffer-1")
	b0, _ := os.ReadFile(f0[0])
	b1, _ := os.ReadFile(f1[0])
	l0, l1 := bytes.SplitAfter(b0, []byte("\n")), bytes.SplitAfter(b1, []byte("\n"))
	l0[4], l1[4] = l1[4], l0[4]
	tampered := t.TempDir()
	os.WriteFile(filepath.Join(tampered, filepath.Base(f0[0])), bytes.Join(l0, nil), 0o600)
	for _, f := range f0[1:] {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(tampered, filepath.Base(f)), b, 0o600)
	}
	code, out, errOut = runCLI(t, "", "audit", "verify", "-o", "json", "--pubkey", pub, tampered, other)
	if code != 1 || !strings.Contains(errOut, "(replica coffer-0)") || !strings.Contains(errOut, "foreign") {
		t.Fatalf("swapped record: exit %d\n%s%s", code, out, errOut)
	}
	var res struct {
		OK      bool
		Problem *audit.Problem
		Trails  []audit.ReplicaResult
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.OK || res.Problem == nil || res.Problem.Replica != "coffer-0" || len(res.Trails) != 2 || res.Trails[1].Problem != nil {
		t.Fatalf("json: %v %+v\n%s", err, res, out)
	}

	// Search: merged by time across the two directories.
	code, out, errOut = runCLI(t, "", "audit", "search", "--action", "kms:*", other, dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 80 {
		t.Fatalf("search: exit %d, %d lines\n%s", code, len(lines), errOut)
	}
	for i, l := range lines {
		want := []string{`"replica":"coffer-0"`, `"replica":"coffer-1"`}[i%2]
		if !strings.Contains(l, want) {
			t.Fatalf("line %d is not of %s: %s", i, want, l)
		}
	}
	code, out, _ = runCLI(t, "", "audit", "search", "--replica", "coffer-1", "--since", "2027-01-15T08:00:00Z", other, dir)
	if n := strings.Count(out, "\n"); code != 0 || n != 40 || strings.Contains(out, "coffer-0") {
		t.Fatalf("search --replica: exit %d, %d lines", code, n)
	}
}
