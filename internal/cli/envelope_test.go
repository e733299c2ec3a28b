package cli

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func init() {
	scriptCmds["binedit"] = cmdBinEdit
}

// cmdBinEdit damages a binary file, writing the result to OUT:
//
//	binedit FILE OUT cut N      keep only the first N bytes
//	binedit FILE OUT flip I     flip the low bit of byte I
//	binedit FILE OUT set I B    set byte I to B (decimal)
//	binedit FILE OUT append N   append N zero bytes
//
// A negative N or I counts from the end of the file. N and I may be a sum
// or difference of two numbers, such as $HS-70.
func cmdBinEdit(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! binedit")
	}
	if len(args) < 4 {
		ts.Fatalf("usage: binedit FILE OUT cut|flip|set|append N [B]")
	}
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	n, err := offset(args[3])
	if err != nil {
		ts.Fatalf("binedit: invalid number %q", args[3])
	}
	if n < 0 {
		n += len(data)
	}
	if args[2] != "append" && (n < 0 || n >= len(data)) {
		ts.Fatalf("binedit: %s is not an offset in the %d bytes of %s", args[3], len(data), args[0])
	}
	switch args[2] {
	case "cut":
		data = data[:n]
	case "flip":
		data[n] ^= 1
	case "set":
		if len(args) != 5 {
			ts.Fatalf("usage: binedit FILE OUT set I B")
		}
		b, err := strconv.ParseUint(args[4], 10, 8)
		ts.Check(err)
		data[n] = byte(b)
	case "append":
		data = append(data, make([]byte, n)...)
	default:
		ts.Fatalf("binedit: unknown edit %q", args[2])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), data, 0o644))
}

// offset parses N, A+B or A-B.
func offset(s string) (int, error) {
	if i := strings.LastIndexAny(s, "+-"); i > 0 {
		a, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, err
		}
		b, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return 0, err
		}
		if s[i] == '-' {
			b = -b
		}
		return a + b, nil
	}
	return strconv.Atoi(s)
}

// TestOutputToDevice: -o /dev/null (or a FIFO) is written in place, never
// replaced by a renamed temporary file.
func TestOutputToDevice(t *testing.T) {
	ff := fileFlags{output: os.DevNull}
	o, err := createOutput(newEnvelopeEncryptCmd(), ff, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.w.Write([]byte("discarded")); err != nil {
		t.Fatal(err)
	}
	if err := o.commit(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(os.DevNull)
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("%s is no longer a character device: %v %v", os.DevNull, fi.Mode(), err)
	}
	if _, err := createOutput(newEnvelopeEncryptCmd(), fileFlags{output: t.TempDir()}, true); err == nil {
		t.Fatal("a directory accepted as output")
	}
}
