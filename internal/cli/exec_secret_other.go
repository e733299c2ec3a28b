//go:build !linux

package cli

import "errors"

// fsMagic cannot tell a tmpfs outside Linux: --file-dir needs --allow-disk
// there.
func fsMagic(string) (int64, error) {
	return 0, errors.New("only Linux is checked for a tmpfs")
}
