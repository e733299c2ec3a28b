package pkcs11

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferkms/coffer/internal/seal"
)

// A PKCS#11 library is process-global: dlopen returns the same handle for
// the same file and C_Initialize/C_Finalize act on the whole process. So the
// seals of this process share one module per library file, initialize it
// once and finalize it when the last one closes. A library is never
// unloaded (dlclose): libraries built on OpenSSL are known to crash at exit
// when unloaded and loaded again, and a loaded library costs nothing.
var modules = struct {
	mu sync.Mutex
	m  map[string]*module
}{m: map[string]*module{}}

// module is one loaded PKCS#11 library.
type module struct {
	path string
	ctx  *p11.Ctx

	mu          sync.Mutex // guards the fields below
	refs        int
	initialized bool
	// gen counts re-initializations, so that seals that saw the same
	// device fault re-initialize the library once, not once each.
	gen uint64
}

// openModule loads the library at path (or returns the loaded one) and
// takes a reference. Errors wrap seal.ErrMisconfigured: a missing file or a
// file that is not a PKCS#11 module will not get better by retrying.
func openModule(path string) (*module, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("pkcs11 seal: library %q %s: %w", path, fmt.Sprintf(format, a...), seal.ErrMisconfigured)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, bad("does not exist")
		}
		return nil, bad("cannot be resolved: %v", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, bad("cannot be read: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, bad("is not a regular file")
	}
	if fi.Mode().Perm()&0o022 != 0 {
		// Whoever can write the module runs code that sees the PIN and the
		// root key.
		return nil, bad("is writable by group or others (mode %04o); make it 0755 or stricter", fi.Mode().Perm())
	}

	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.m[real]; m != nil {
		m.mu.Lock()
		m.refs++
		m.mu.Unlock()
		return m, nil
	}
	if err := checkModuleFile(real); err != nil {
		return nil, bad("%v", err)
	}
	var ctx *p11.Ctx
	if err := recovered("loading the library", func() error {
		ctx = p11.New(real)
		return nil
	}); err != nil {
		return nil, err
	}
	if ctx == nil {
		return nil, bad("cannot be loaded as a PKCS#11 module (dlopen failed or it has no C_GetFunctionList)")
	}
	m := &module{path: real, ctx: ctx, refs: 1}
	modules.m[real] = m
	return m, nil
}

// checkModuleFile reads an ELF file's dynamic symbols, so that a file that
// is not a PKCS#11 module (a program, libc) is refused before dlopen runs
// its initializers. On systems that do not use ELF the loader decides.
func checkModuleFile(path string) error {
	switch runtime.GOOS {
	case "darwin", "windows", "ios":
		return nil
	}
	f, err := elf.Open(path)
	if err != nil {
		return errors.New("is not an ELF shared library, so not a PKCS#11 module")
	}
	defer f.Close()
	if f.Type != elf.ET_DYN {
		return errors.New("is not a shared library, so not a PKCS#11 module")
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return errors.New("has no dynamic symbol table, so it is not a PKCS#11 module")
	}
	for _, s := range syms {
		if s.Name == "C_GetFunctionList" && s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			return nil
		}
	}
	return errors.New("does not export C_GetFunctionList, so it is not a PKCS#11 module")
}

// ensureInit calls C_Initialize once and returns the generation the caller
// then works in. A library another part of the process initialized already
// (CKR_CRYPTOKI_ALREADY_INITIALIZED) is fine.
func (m *module) ensureInit() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initialized {
		return m.gen, nil
	}
	err := recovered("C_Initialize", func() error { return m.ctx.Initialize() })
	if err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return 0, fmt.Errorf("pkcs11 seal: C_Initialize of %s: %w (for SoftHSM check SOFTHSM2_CONF and its tokendir)", m.path, err)
	}
	m.initialized = true
	return m.gen, nil
}

// reinit finalizes and initializes the library again after a fault that
// invalidated it (a device removed, a library finalized), unless another
// seal already did so since generation gen.
func (m *module) reinit(gen uint64) error {
	m.mu.Lock()
	if m.gen == gen {
		// The error is expected when the library was finalized under us.
		_ = recovered("C_Finalize", func() error { return m.ctx.Finalize() })
		m.initialized = false
		m.gen++
	}
	m.mu.Unlock()
	_, err := m.ensureInit()
	return err
}

// release drops a reference; the last one finalizes the library.
func (m *module) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs--
	if m.refs == 0 && m.initialized {
		_ = recovered("C_Finalize", func() error { return m.ctx.Finalize() })
		m.initialized = false
		m.gen++
	}
}
