package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An existing --file-dir is checked empty before anything is done to it:
// one holding any entry (a hidden file too) is refused, left as it was
// (mode, contents), and nothing is written in it.
func TestSecretFilesExistingDirMustBeEmpty(t *testing.T) {
	for _, entry := range []string{"app.conf", ".hidden"} {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, entry), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := openSecretFiles(dir, true); err == nil || !strings.Contains(err.Error(), "is not empty") {
			t.Fatalf("a directory holding %s: %v", entry, err)
		}
		st, err := os.Stat(dir)
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Fatalf("the refused directory was changed: %v %v", st.Mode(), err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("entries after the refusal: %v", ents)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, entry)); string(b) != "keep" {
			t.Fatalf("%s was changed", entry)
		}
	}
	// Empty: accepted, set to 0700, kept after remove.
	dir := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sf, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	sf.remove()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the caller's directory was removed: %v", err)
	}
}
