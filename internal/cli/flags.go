package cli

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// kvFlag is a repeatable KEY=VALUE flag (--context, --tag). Its parse error
// goes through the flag error function, so it is a usage error that names
// the flag.
type kvFlag struct {
	m map[string]string
}

// String implements pflag.Value.
func (f *kvFlag) String() string {
	if len(f.m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(f.m))
	for _, k := range slices.Sorted(maps.Keys(f.m)) {
		parts = append(parts, k+"="+f.m[k])
	}
	return strings.Join(parts, ",")
}

// Set implements pflag.Value: it adds one KEY=VALUE pair.
func (f *kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("want KEY=VALUE")
	}
	if k == "" {
		return errors.New("empty key; want KEY=VALUE")
	}
	if _, dup := f.m[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	if f.m == nil {
		f.m = make(map[string]string)
	}
	f.m[k] = v
	return nil
}

// Type implements pflag.Value; it shows in help as the argument name.
func (f *kvFlag) Type() string { return "key=value" }

// Map returns the pairs given, or nil when none were.
func (f *kvFlag) Map() map[string]string { return f.m }

// addKVFlag defines a repeatable KEY=VALUE flag on cmd.
func addKVFlag(cmd *cobra.Command, name, usage string) *kvFlag {
	f := &kvFlag{}
	cmd.Flags().Var(f, name, usage+" (KEY=VALUE, repeatable)")
	return f
}

// parsePeriod validates a duration as the server accepts it: a whole number
// of days ("90d") or a Go duration ("12h", "30m"), positive.
func parsePeriod(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, errors.New("want a positive number of days like 90d, or a duration like 12h or 30m")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("want a positive duration like 90d, 12h or 30m")
	}
	return d, nil
}

// checkPeriodFlag validates the duration flag name, unless it is empty.
func checkPeriodFlag(name, value string) error {
	if value == "" {
		return nil
	}
	if _, err := parsePeriod(value); err != nil {
		return usageErrorf("invalid --%s %q: %v", name, value, err)
	}
	return nil
}

// stdinIsTerminal reports whether the command's standard input is a
// terminal, and its file descriptor.
func stdinIsTerminal(cmd *cobra.Command) (int, bool) {
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// readInput returns the bytes of the file named by path ("-" is standard
// input), or standard input when path is empty. what names the input in
// errors. Reading from a terminal is refused: the command would seem to
// hang.
func readInput(cmd *cobra.Command, path, what, hint string) ([]byte, error) {
	if path != "" && path != "-" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", what, err)
		}
		return data, nil
	}
	if _, tty := stdinIsTerminal(cmd); tty && path == "" {
		return nil, usageErrorf("no %s given: %s", what, hint)
	}
	data, err := io.ReadAll(cmd.InOrStdin())
	if err != nil {
		return nil, fmt.Errorf("reading %s from standard input: %w", what, err)
	}
	return data, nil
}

// readLine reads one line from r, without its line ending.
func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// decodeBase64 decodes base64 text, ignoring whitespace and line breaks,
// with or without padding, in the standard or URL-safe alphabet.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	if s == "" {
		return nil, errors.New("empty input")
	}
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// readCiphertext returns the ciphertext given as a base64 argument, in a
// file (--in) or on standard input, decoded.
func readCiphertext(cmd *cobra.Command, args []string, inFile string) ([]byte, error) {
	var text string
	switch {
	case len(args) > 0 && inFile != "":
		return nil, usageErrorf("give the ciphertext either as an argument or with --in, not both")
	case len(args) > 0:
		text = args[0]
	default:
		data, err := readInput(cmd, inFile, "ciphertext", "pass it as an argument, with --in FILE, or on standard input")
		if err != nil {
			return nil, err
		}
		text = string(data)
	}
	ct, err := decodeBase64(text)
	if err != nil {
		return nil, fmt.Errorf("ciphertext is not valid base64: %v", err)
	}
	return ct, nil
}
