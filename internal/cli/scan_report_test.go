package cli

import (
	"os"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/cofferkms/coffer/credential"
)

func init() {
	scriptCmds["newtoken"] = cmdNewToken
}

// cmdNewToken writes a well-formed Coffer token that no server issued:
//
//	newtoken FILE
func cmdNewToken(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: newtoken FILE")
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(credential.New(credential.TokenPrefix)), 0o600))
}
