package cli

import "os"

func init() {
	// [shm]: /dev/shm is a tmpfs, for --file-dir.
	scriptConditions["shm"] = func() bool {
		m, err := fsMagic("/dev/shm")
		return err == nil && (m == tmpfsMagic || m == ramfsMagic)
	}
	// [tmpdisk]: the scripts' work directories are not on a tmpfs, so
	// --file-dir there must be refused.
	scriptConditions["tmpdisk"] = func() bool {
		m, err := fsMagic(os.TempDir())
		return err == nil && m != tmpfsMagic && m != ramfsMagic
	}
}
