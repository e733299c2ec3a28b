package audit

import "syscall"

// fallocKeepSize reserves blocks without changing the file size.
const fallocKeepSize = 0x1

func reserve(f File, off, n int64) error {
	fd, ok := f.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	err := syscall.Fallocate(int(fd.Fd()), fallocKeepSize, off, n)
	if err == syscall.EOPNOTSUPP || err == syscall.ENOSYS {
		return nil // the file system cannot reserve; writes may then fail late
	}
	return err
}
