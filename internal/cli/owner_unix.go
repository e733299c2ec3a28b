//go:build unix

package cli

import (
	"io/fs"
	"os"
	"syscall"
)

// ownedByCaller reports whether the file st describes belongs to the user
// running the command.
func ownedByCaller(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Getuid()
}
