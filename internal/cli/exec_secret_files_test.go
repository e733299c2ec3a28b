package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// A write that fails part way (here the second name is taken by a
// directory) must still let remove find the files it wrote before: in a
// directory coffer did not create, they would stay behind with their
// values after coffer exits.
func TestSecretFilesPartialWriteRemoved(t *testing.T) {
	dir := t.TempDir()
	sf, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "B"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = sf.write([]deliveredValue{{target: "A", source: "s#a", value: "va"}, {target: "B", source: "s#b", value: "vb"}})
	if err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "A")); err != nil {
		t.Fatalf("A was not written before the failure: %v", err)
	}
	sf.remove()
	if _, err := os.Lstat(filepath.Join(dir, "A")); !os.IsNotExist(err) {
		t.Fatalf("A is left in --file-dir after remove (%v)", err)
	}
}

// A rewrite (--watch) removes the files of names no longer delivered, and
// remove then removes the rest.
func TestSecretFilesRewriteDropsOldNames(t *testing.T) {
	dir := t.TempDir()
	sf, err := openSecretFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := sf.write([]deliveredValue{{target: "A", value: "1"}, {target: "B", value: "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := sf.write([]deliveredValue{{target: "B", value: "3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "A")); !os.IsNotExist(err) {
		t.Fatalf("A, no longer delivered, is still there (%v)", err)
	}
	sf.remove()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left after remove: %v", ents)
	}
}
