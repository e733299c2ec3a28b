package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// This file gives the scripts a real Coffer server, run in the test process,
// and small helpers to read the CLI's JSON output (testscript has no jq).

func init() {
	scriptCmds["coffer-server"] = cmdCofferServer
	scriptCmds["jsonget"] = cmdJSONGet
	scriptCmds["b64edit"] = cmdB64Edit
	scriptCmds["mkfile"] = cmdMkfile
	scriptCmds["coffer-foreign-shares"] = cmdForeignShares
}

// serverStartTimeout bounds how long coffer-server waits for the server to
// listen.
const serverStartTimeout = 20 * time.Second

// cmdCofferServer starts a Coffer server in the test process for the rest of
// the script:
//
//	coffer-server [-dev] [-tls] [-sealed]
//
// It listens on a free loopback port (127.0.0.1:0) and keeps its data under
// $WORK/coffer-server (its log is $WORK/coffer-server/server.log). It prints
// the address and sets COFFER_ADDR to it, and SERVER_HOSTPORT and
// SERVER_PORT to its host:port and port. With -tls it serves HTTPS with a
// self-signed certificate and sets COFFER_CACERT to it. The default, -dev,
// is a server initialized and unsealed at start: COFFER_TOKEN and
// ROOT_TOKEN are its root token. -sealed starts a production server on a
// fresh store instead: it needs 'coffer operator init' and unsealing, and
// COFFER_TOKEN stays unset. One server per script; it stops, and the
// command waits for it, when the script ends.
func cmdCofferServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! coffer-server")
	}
	fs := flag.NewFlagSet("coffer-server", flag.ContinueOnError)
	fs.SetOutput(ts.Stderr())
	dev := fs.Bool("dev", false, "initialized and unsealed at start (the default)")
	useTLS := fs.Bool("tls", false, "serve HTTPS with a self-signed certificate")
	sealed := fs.Bool("sealed", false, "production mode: uninitialized and sealed")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		ts.Fatalf("usage: coffer-server [-dev] [-tls] [-sealed]")
	}
	if *dev && *sealed {
		ts.Fatalf("coffer-server: -dev and -sealed exclude each other")
	}

	dir := ts.MkAbs("coffer-server")
	if _, err := os.Stat(dir); err == nil {
		ts.Fatalf("coffer-server: a server already ran in this script (%s exists)", dir)
	}
	ts.Check(os.MkdirAll(dir, 0o700))
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	ts.Check(err)
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var cfg server.Config
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.Auto = *useTLS
	if *sealed {
		cfg.Storage.Path = filepath.Join(dir, "coffer.db")
	} else {
		cfg.Dev, cfg.DevDir = true, dir
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, cfg, logger, func(b server.Banner) { ready <- b })
	}()
	stop := func() {
		cancel()
		err := <-done
		_ = logFile.Close()
		if err != nil {
			ts.Logf("coffer-server: server stopped with: %v", err)
		}
	}

	var ban server.Banner
	select {
	case ban = <-ready:
	case err := <-done:
		cancel()
		_ = logFile.Close()
		ts.Fatalf("coffer-server: server did not start: %v", err)
	case <-time.After(serverStartTimeout):
		stop()
		ts.Fatalf("coffer-server: server did not listen within %v", serverStartTimeout)
	}
	ts.Defer(stop)

	ts.Setenv("COFFER_ADDR", ban.Addr)
	_, hostPort, _ := strings.Cut(ban.Addr, "://")
	_, port, err := net.SplitHostPort(hostPort)
	ts.Check(err)
	ts.Setenv("SERVER_HOSTPORT", hostPort)
	ts.Setenv("SERVER_PORT", port)
	if *useTLS {
		if ban.CACertFile == "" {
			ts.Fatalf("coffer-server: TLS server reported no certificate file")
		}
		ts.Setenv("COFFER_CACERT", ban.CACertFile)
	}
	if cfg.Dev {
		if ban.RootToken == "" {
			ts.Fatalf("coffer-server: dev server reported no root token")
		}
		ts.Setenv("COFFER_TOKEN", ban.RootToken)
		ts.Setenv("ROOT_TOKEN", ban.RootToken)
	}
	fmt.Fprintf(ts.Stdout(), "coffer-server: listening on %s\n", ban.Addr)
}

// cmdJSONGet reads a value out of a JSON document:
//
//	jsonget [-len] [-env NAME] FILE PATH [WANT]
//
// FILE is a file name, or stdout or stderr for the output of the previous
// command. PATH is dot-separated: object keys and array indexes
// (shares.0, versions.1.version); "." is the whole document. Strings are
// taken as they are, other values as compact JSON. With -len the value is
// the length of the array, object or string PATH names.
//
// With WANT the value must equal it (JSON values are compared as JSON, so
// key order and spacing do not matter); with -env NAME it is stored in the
// variable NAME; otherwise it is printed on stdout, for stdout checks.
// Only printing replaces the previous command's stdout, so several values
// can be checked or taken from one output with WANT or -env. With !, PATH
// must name nothing (the file must still be JSON).
func cmdJSONGet(ts *testscript.TestScript, neg bool, args []string) {
	var envName string
	var length bool
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch {
		case args[0] == "-len":
			length, args = true, args[1:]
		case args[0] == "-env" && len(args) > 1:
			envName, args = args[1], args[2:]
		default:
			ts.Fatalf("jsonget: unknown option %q", args[0])
		}
	}
	if len(args) < 2 || len(args) > 3 || (envName != "" && len(args) == 3) {
		ts.Fatalf("usage: jsonget [-len] [-env NAME] FILE PATH [WANT]")
	}
	file, path := args[0], args[1]
	var doc any
	dec := json.NewDecoder(strings.NewReader(ts.ReadFile(file)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		ts.Fatalf("jsonget: %s is not JSON: %v", file, err)
	}
	if dec.More() {
		ts.Fatalf("jsonget: %s holds more than one JSON value", file)
	}
	got, err := jsonPath(doc, path, length)
	if neg {
		if err == nil {
			ts.Fatalf("jsonget: %s: %s is present (%s), want it absent", file, path, got)
		}
		return
	}
	if err != nil {
		ts.Fatalf("jsonget: %s: %v", file, err)
	}
	switch {
	case envName != "":
		ts.Setenv(envName, got)
	case len(args) == 3:
		if got != args[2] && got != canonicalJSON(args[2]) {
			ts.Fatalf("jsonget: %s: %s is %q, want %q", file, path, got, args[2])
		}
	default:
		fmt.Fprintln(ts.Stdout(), got)
	}
}

// jsonPath follows path through doc (decoded with UseNumber) and formats
// the value it names, or its length.
func jsonPath(doc any, path string, length bool) (string, error) {
	v := doc
	var parts []string
	if path != "." {
		parts = strings.Split(path, ".")
	}
	for i, p := range parts {
		at := strings.Join(parts[:i], ".")
		if at == "" {
			at = "the document"
		}
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[p]
			if !ok {
				return "", fmt.Errorf("%s has no field %q", at, p)
			}
			v = next
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n >= len(x) {
				return "", fmt.Errorf("%s has no element %q (length %d)", at, p, len(x))
			}
			v = x[n]
		default:
			return "", fmt.Errorf("%s is not an object or array", at)
		}
	}
	if length {
		switch x := v.(type) {
		case []any:
			return strconv.Itoa(len(x)), nil
		case map[string]any:
			return strconv.Itoa(len(x)), nil
		case string:
			return strconv.Itoa(len(x)), nil
		}
		return "", fmt.Errorf("%s has no length", path)
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// canonicalJSON returns s re-encoded as compact JSON with sorted object
// keys, as jsonPath formats values, or "" when s is not JSON.
func canonicalJSON(s string) string {
	var v any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return ""
	}
	if _, ok := v.(string); ok {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// cmdB64Edit damages a base64 ciphertext and prints the result as base64:
//
//	b64edit FILE cut N    keep only the first N bytes
//	b64edit FILE flip I   flip the bits of byte I
//
// FILE holds the base64 text (stdout for the previous command's output).
func cmdB64Edit(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! b64edit")
	}
	if len(args) != 3 {
		ts.Fatalf("usage: b64edit FILE cut|flip N")
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ts.ReadFile(args[0])))
	if err != nil {
		ts.Fatalf("b64edit: %s: %v", args[0], err)
	}
	n, err := strconv.Atoi(args[2])
	if err != nil || n < 0 || n >= len(data) {
		ts.Fatalf("b64edit: %q is not an offset in the %d bytes of %s", args[2], len(data), args[0])
	}
	switch args[1] {
	case "cut":
		data = data[:n]
	case "flip":
		data[n] ^= 0xff
	default:
		ts.Fatalf("b64edit: unknown edit %q: want cut or flip", args[1])
	}
	fmt.Fprintln(ts.Stdout(), base64.StdEncoding.EncodeToString(data))
}

// cmdMkfile writes a file of SIZE bytes (letters and newlines):
//
//	mkfile FILE SIZE
func cmdMkfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! mkfile")
	}
	if len(args) != 2 {
		ts.Fatalf("usage: mkfile FILE SIZE")
	}
	size, err := strconv.Atoi(args[1])
	if err != nil || size < 0 {
		ts.Fatalf("mkfile: invalid SIZE %q", args[1])
	}
	line := []byte("abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n")
	data := bytes.Repeat(line, size/len(line)+1)[:size]
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), data, 0o644))
}

// cmdForeignShares prints the unseal shares of a throwaway store, well
// formed but belonging to no server of the script, one per line:
//
//	coffer-foreign-shares [-files PREFIX] N T
//
// With -files each share is also written to PREFIX1.txt, PREFIX2.txt, ...
// (for stdin or --in).
func cmdForeignShares(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! coffer-foreign-shares")
	}
	var prefix string
	if len(args) > 1 && args[0] == "-files" {
		prefix, args = args[1], args[2:]
	}
	if len(args) != 2 {
		ts.Fatalf("usage: coffer-foreign-shares [-files PREFIX] N T")
	}
	n, err1 := strconv.Atoi(args[0])
	t, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil {
		ts.Fatalf("coffer-foreign-shares: N and T must be numbers")
	}
	shares, err := barrier.New(inmem.New()).Initialize(context.Background(), n, t)
	if err != nil {
		ts.Fatalf("coffer-foreign-shares: %v", err)
	}
	for i, s := range shares {
		fmt.Fprintln(ts.Stdout(), s)
		if prefix != "" {
			ts.Check(os.WriteFile(ts.MkAbs(fmt.Sprintf("%s%d.txt", prefix, i+1)), []byte(s+"\n"), 0o600))
		}
	}
}
