// Command coffer is Coffer's single binary: server, KMS plugin, CLI and tools.
// All behaviour lives in internal/cli; this file only hands over control.
package main

import (
	"os"

	"github.com/cofferkms/coffer/internal/cli"
)

func main() { os.Exit(cli.Main()) }
