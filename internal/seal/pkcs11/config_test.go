package pkcs11

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/seal"
)

func TestValidate(t *testing.T) {
	slot := uint(3)
	good := Config{Library: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "coffer", PINFile: "/etc/coffer/pin", KeyLabel: "root"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	bySlot := good
	bySlot.TokenLabel, bySlot.Slot, bySlot.PINFile, bySlot.PINEnv, bySlot.Mechanism = "", &slot, "", "COFFER_PIN", MechanismRSAOAEP
	if err := bySlot.Validate(); err != nil {
		t.Fatalf("slot and pin_env: %v", err)
	}
	edit := func(f func(*Config)) Config { c := good; f(&c); return c }
	cases := map[string]Config{
		"no library":         edit(func(c *Config) { c.Library = "" }),
		"relative library":   edit(func(c *Config) { c.Library = "libsofthsm2.so" }),
		"no token":           edit(func(c *Config) { c.TokenLabel = "" }),
		"token and slot":     edit(func(c *Config) { c.Slot = &slot }),
		"long token label":   edit(func(c *Config) { c.TokenLabel = strings.Repeat("t", 33) }),
		"no pin":             edit(func(c *Config) { c.PINFile = "" }),
		"pin file and env":   edit(func(c *Config) { c.PINEnv = "PIN" }),
		"bad env name":       edit(func(c *Config) { c.PINFile, c.PINEnv = "", "A=B" }),
		"no key label":       edit(func(c *Config) { c.KeyLabel = "" }),
		"long key label":     edit(func(c *Config) { c.KeyLabel = strings.Repeat("k", 256) }),
		"unknown mechanism":  edit(func(c *Config) { c.Mechanism = "aes-cbc" }),
		"mechanism mis-case": edit(func(c *Config) { c.Mechanism = "AES-GCM" }),
	}
	for name, c := range cases {
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: valid", name)
			continue
		}
		wantErr(t, err, seal.ErrMisconfigured)
		if _, nerr := New(c); nerr == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestBadLibrary: files that are not PKCS#11 modules are refused by New,
// before anything of theirs runs.
func TestBadLibrary(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text.so")
	if err := os.WriteFile(text, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The reason, which for ELF files comes from reading the symbols
	// before anything is loaded.
	libs := map[string][2]string{
		"missing":     {filepath.Join(dir, "nope.so"), "does not exist"},
		"directory":   {dir, "not a regular file"},
		"not ELF":     {text, "not an ELF shared library"},
		"a program":   {"/bin/ls", "does not export C_GetFunctionList"},
		"libc":        {findLibc(t), "does not export C_GetFunctionList"},
		"via symlink": {symlink(t, "/bin/ls"), "does not export C_GetFunctionList"},
	}
	for name, l := range libs {
		lib, why := l[0], l[1]
		c := Config{Library: lib, TokenLabel: "t", PINEnv: "P", KeyLabel: "k"}
		s, err := New(c)
		if err == nil {
			s.Close()
			t.Errorf("%s (%s): loaded", name, lib)
			continue
		}
		wantErr(t, err, seal.ErrMisconfigured)
		if !strings.Contains(err.Error(), lib) || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: error %q does not name the library and say %q", name, err, why)
		}
	}
}

// TestWritableLibrary: a module others can write is refused.
func TestWritableLibrary(t *testing.T) {
	needHSM(t)
	raw, err := os.ReadFile(hsmLib)
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(t.TempDir(), "libsofthsm2.so")
	if err := os.WriteFile(lib, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(lib, 0o757); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Library: lib, TokenLabel: "t", PINEnv: "P", KeyLabel: "k"})
	wantErr(t, err, seal.ErrMisconfigured)
	if !strings.Contains(err.Error(), "writable") {
		t.Fatalf("error %q does not say why", err)
	}
}

func findLibc(t *testing.T) string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6", "/lib64/libc.so.6", "/usr/lib/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("no libc.so.6 in the usual places: add this system's path to findLibc")
	return ""
}

func symlink(t *testing.T, target string) string {
	p := filepath.Join(t.TempDir(), "link.so")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	return p
}
