package cli

import (
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// update rewrites the scripts' expected files from the actual output:
// go test ./internal/cli -run TestScripts -update
var update = flag.Bool("update", false, "update testscript golden files")

// TestMain lets the test binary act as the coffer command inside scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"coffer": func() { os.Exit(Main()) },
	})
}

// scriptSetups run, in order, before each script. Test files that need more
// (a running server, say) append to it from an init function and set
// variables with env.Setenv.
var scriptSetups = []func(env *testscript.Env) error{
	setupBaseEnv,
}

// scriptCmds are the custom commands available to the scripts. Test files
// may add more from an init function.
var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"exitcode": cmdExitCode,
}

// scriptConditions answer the scripts' [name] conditions beyond the
// built-in ones. Test files may add more from an init function.
var scriptConditions = map[string]func() bool{}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			for _, setup := range scriptSetups {
				if err := setup(env); err != nil {
					return err
				}
			}
			return nil
		},
		Cmds: scriptCmds,
		Condition: func(cond string) (bool, error) {
			if f, ok := scriptConditions[cond]; ok {
				return f(), nil
			}
			return false, errors.New("unknown condition " + strconv.Quote(cond))
		},
	})
}

// setupBaseEnv gives every script a clean Coffer environment and
// UNUSED_ADDR, the address of a local port nothing listens on.
func setupBaseEnv(env *testscript.Env) error {
	for _, v := range []string{"COFFER_ADDR", "COFFER_TOKEN", "COFFER_CACERT", "COFFER_SKIP_VERIFY"} {
		env.Setenv(v, "")
	}
	addr, err := unusedAddr()
	if err != nil {
		return err
	}
	env.Setenv("UNUSED_ADDR", "http://"+addr)
	return nil
}

// unusedAddr returns a local address that refuses connections. It picks a
// privileged port: a port from the ephemeral range, freed after a listen,
// can be taken by the client's own outgoing socket, which then connects to
// itself instead of being refused.
func unusedAddr() (string, error) {
	for _, port := range []int{1, 3, 5, 7, 9, 11, 13, 17, 19, 47} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return addr, nil
		}
	}
	return "", errors.New("no local port refuses connections")
}

// cmdExitCode runs a program and checks its exit code:
//
//	exitcode CODE PROGRAM [ARGS...]
//
// Its stdout and stderr are kept for the following stdout/stderr checks.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! exitcode")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exitcode CODE PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: invalid CODE %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			ts.Fatalf("exitcode: %v", err)
		}
		got = exitErr.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}
