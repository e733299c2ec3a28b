package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cofferkms/coffer/internal/server"
)

// The documentation shows coffer commands in three places: shell blocks of
// README.md and docs/*.md, `coffer ...` code spans in their prose, and the
// Example of every command's help. These tests keep them true (issue 13:
// docs drifted from the CLI):
//
//   - TestDocCommandsParse resolves every such command against the real
//     command tree and parses its flags: a command, subcommand or flag that
//     does not exist fails, wherever it is shown.
//   - TestDocCommandsRun runs every command of the pages' shell blocks, in
//     order, against a real dev server (one per page), except the ones in
//     docSkips (each with its reason). A command may fail for want of the
//     files, keys or cluster a page assumes (exit 1, or 3 for a "no"
//     answer), but never with a usage error (exit 2): that would be the doc
//     showing an invocation the CLI refuses.
//   - TestDocWalkthroughs runs the shell blocks marked with a line
//     "<!-- doctest: run -->" just before them as a user would, through sh
//     with the coffer binary on PATH, against a dev server: every line of
//     such a block must succeed, in order (export and read lines are
//     skipped: the test sets COFFER_ADDR and COFFER_TOKEN itself).

// docSkips are the commands TestDocCommandsRun does not run, by pattern
// over the command line, with the reason. They are still parsed.
var docSkips = []struct {
	pattern *regexp.Regexp
	reason  string
}{
	{regexp.MustCompile(`^coffer server\b`), "starts a server and blocks; the test runs its own dev server"},
	{regexp.MustCompile(`^coffer kms-plugin\b`), "serves the kube-apiserver on a socket until stopped"},
	{regexp.MustCompile(`^coffer k8s\b`), "needs etcd and a kube-apiserver (test/kube covers it with COFFER_E2E=1)"},
	{regexp.MustCompile(`^coffer exec\b`), "replaces the test process with the command (execve)"},
	{regexp.MustCompile(`^coffer edit\b`), "opens an interactive editor"},
	{regexp.MustCompile(`^coffer bench\b`), "loads the server for seconds; internal/cli/testdata/script/bench.txtar runs it"},
	{regexp.MustCompile(`--kubeconfig\b`), "needs a Kubernetes cluster"},
	{regexp.MustCompile(`--git\b|--staged\b`), "needs a git repository"},
	{regexp.MustCompile(`^coffer operator (init|unseal)\b`), "needs a sealed production server; operator.txtar covers it"},
	{regexp.MustCompile(`^coffer auth (kubernetes|cert)\b`), "needs a cluster's service-account token or a client certificate"},
	{regexp.MustCompile(`^coffer audit (verify|search)\b`), "reads the audit directory of a production server"},
}

// docCommand is one coffer command found in the documentation.
type docCommand struct {
	where string   // FILE:LINE, or the help of a command
	line  string   // as shown, after "coffer"
	args  []string // shell words after "coffer"
	block bool     // from a shell block (run by TestDocCommandsRun)
}

// docPages returns README.md and docs/*.md.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/*.md found: %v", err)
	}
	return append([]string{"../../README.md"}, pages...)
}

var (
	fenceRe    = regexp.MustCompile("^\\s*```(\\S*)")
	codeSpanRe = regexp.MustCompile("`((?:\\./)?coffer [^`]+)`")
)

// extractDocCommands finds the coffer commands of a Markdown page.
func extractDocCommands(t *testing.T, path string) []docCommand {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(path, "../../")
	var out []docCommand
	lines := strings.Split(string(data), "\n")
	inBlock, shell := false, false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := fenceRe.FindStringSubmatch(l); m != nil {
			if !inBlock {
				inBlock = true
				// Blocks without a language hold synopses and output;
				// only shell blocks are commands.
				switch m[1] {
				case "sh", "bash", "shell", "console":
					shell = true
				default:
					shell = false
				}
			} else {
				inBlock = false
			}
			continue
		}
		where := fmt.Sprintf("%s:%d", name, i+1)
		if inBlock {
			if !shell {
				continue
			}
			// A logical line: continuations joined.
			for strings.HasSuffix(strings.TrimSpace(l), "\\") && i+1 < len(lines) {
				i++
				l = strings.TrimSuffix(strings.TrimSpace(l), "\\") + " " + strings.TrimSpace(lines[i])
			}
			for _, cmdLine := range shellCoffer(l) {
				out = append(out, docCommand{where: where, line: cmdLine, args: synopsisArgs(shellWords(cmdLine)[1:]), block: true})
			}
			continue
		}
		// An indented code block line (four spaces or more) that runs
		// coffer; continuations joined.
		if strings.HasPrefix(l, "    ") && strings.HasPrefix(strings.TrimSpace(l), "coffer ") {
			for strings.HasSuffix(strings.TrimSpace(l), "\\") && i+1 < len(lines) {
				i++
				l = strings.TrimSuffix(strings.TrimSpace(l), "\\") + " " + strings.TrimSpace(lines[i])
			}
			for _, cmdLine := range shellCoffer(l) {
				out = append(out, docCommand{where: where, line: cmdLine, args: synopsisArgs(shellWords(cmdLine)[1:])})
			}
			continue
		}
		for _, m := range codeSpanRe.FindAllStringSubmatch(l, -1) {
			cmdLine := strings.TrimPrefix(m[1], "./")
			for _, c := range shellCoffer(cmdLine) {
				out = append(out, docCommand{where: where, line: c, args: synopsisArgs(shellWords(c)[1:])})
			}
		}
	}
	return out
}

// cofferStartRe finds where a coffer command starts in a shell line: at
// the start, after a pipe, a ;, &&, ||, $( or a variable assignment.
var cofferStartRe = regexp.MustCompile(`(?:^|[|;&(]\s*|\s)(?:go run \./cmd/coffer|\./coffer|coffer)(\s|$)`)

// shellCoffer returns the coffer commands of one shell line, each
// starting with "coffer" and cut at the end of its pipeline stage,
// redirection, comment or command substitution.
func shellCoffer(line string) []string {
	line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "$ "))
	if strings.HasPrefix(line, "#") {
		return nil
	}
	line = cutComment(line)
	var out []string
	for _, loc := range cofferStartRe.FindAllStringSubmatchIndex(line, -1) {
		start := loc[0]
		rest := line[start:]
		rest = strings.TrimLeft(rest, "|;&( \t")
		// Only a command word counts: not "coffer" inside a path or a
		// quoted message.
		if before := line[:start]; strings.Count(before, "'")%2 == 1 || (strings.Count(before, `"`)%2 == 1 && !strings.Contains(before, `"$`)) {
			continue
		}
		rest = strings.TrimPrefix(strings.TrimPrefix(rest, "go run ./cmd/"), "./")
		out = append(out, cutCommand(rest))
	}
	return out
}

// cutComment removes a trailing shell comment (an unquoted # after a
// space).
func cutComment(s string) string {
	var q rune
	for i, r := range s {
		switch {
		case q != 0:
			if r == q {
				q = 0
			}
		case r == '\'' || r == '"':
			q = r
		case r == '#' && i > 0 && (s[i-1] == ' ' || s[i-1] == '\t'):
			return strings.TrimSpace(s[:i])
		}
	}
	return s
}

// cutCommand cuts a command line at the first unquoted |, ;, &, ), >, <
// or # that starts a comment.
func cutCommand(s string) string {
	var q rune
	for i, r := range s {
		switch {
		case q != 0:
			if r == q {
				q = 0
			}
		case r == '\'' || r == '"':
			q = r
		case strings.ContainsRune("|;&)<>", r):
			return strings.TrimSpace(s[:i])
		case r == '#' && i > 0 && s[i-1] == ' ':
			return strings.TrimSpace(s[:i])
		}
	}
	return strings.TrimSpace(s)
}

// synopsisArgs drops what a synopsis marks as optional or elided: words
// from "[" to "]", and "...".
func synopsisArgs(words []string) []string {
	var out []string
	depth := 0
	for _, w := range words {
		switch {
		case strings.HasPrefix(w, "["):
			depth += strings.Count(w, "[") - strings.Count(w, "]")
		case depth > 0:
			depth += strings.Count(w, "[") - strings.Count(w, "]")
		case w == "..." || w == "…":
		default:
			out = append(out, strings.TrimSuffix(w, "..."))
		}
	}
	return out
}

// shellWords splits a command line as a POSIX shell would, for quotes and
// backslashes (no expansions).
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var q rune
	for _, r := range s {
		switch {
		case q == '\'':
			if r == '\'' {
				q = 0
			} else {
				cur.WriteRune(r)
			}
		case q == '"':
			if r == '"' {
				q = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			q, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// helpExamples returns the coffer commands of every command's Example.
func helpExamples(root *cobra.Command) []docCommand {
	var out []docCommand
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		ex := strings.ReplaceAll(c.Example, "\\\n", " ")
		for _, l := range strings.Split(ex, "\n") {
			for _, cl := range shellCoffer(l) {
				out = append(out, docCommand{where: "help of " + c.CommandPath(), line: cl, args: shellWords(cl)[1:]})
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return out
}

// checkParses resolves args in the command tree and parses their flags.
// A code span in prose may name a flag without its value, and a group of
// commands as a/b/c ("coffer encrypt/decrypt/inspect"); span says so.
func checkParses(args []string, span bool) error {
	root := newRootCmd()
	if span && len(args) > 0 && strings.Contains(args[0], "/") && !strings.HasPrefix(args[0], "-") {
		for _, alt := range strings.Split(args[0], "/") {
			if err := checkParses(append([]string{alt}, args[1:]...), span); err != nil {
				return err
			}
		}
		return nil
	}
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil && !errors.Is(err, pflag.ErrHelp) &&
		!(span && strings.HasPrefix(err.Error(), "flag needs an argument")) {
		return fmt.Errorf("%s: %v", cmd.CommandPath(), err)
	}
	if f := cmd.Flags().Lookup(flagOutput); f != nil && f.Changed {
		switch v := f.Value.String(); v {
		case outputTable, outputHuman, outputJSON, outputYAML:
		case outputSARIF:
			if cmd.Annotations[annotSARIF] == "" {
				return fmt.Errorf("%s: -o sarif is for scan and rbac audit", cmd.CommandPath())
			}
		case outputEnv, outputRaw:
			if cmd.Annotations[annotSecretFormats] == "" {
				return fmt.Errorf("%s: -o %s is for secret get", cmd.CommandPath(), v)
			}
		default:
			if !span || !strings.HasPrefix(v, "<") {
				return fmt.Errorf("%s: -o %q is not an output format (files are --out FILE)", cmd.CommandPath(), v)
			}
		}
	}
	if cmd.HasAvailableSubCommands() {
		if pos := cmd.Flags().Args(); len(pos) > 0 && !strings.HasPrefix(pos[0], "<") {
			return fmt.Errorf("%s has no subcommand %q", cmd.CommandPath(), pos[0])
		}
	}
	return nil
}

func TestDocCommandsParse(t *testing.T) {
	var all []docCommand
	for _, p := range docPages(t) {
		all = append(all, extractDocCommands(t, p)...)
	}
	if len(all) < 50 {
		t.Fatalf("found only %d coffer commands in the docs; is the extraction broken?", len(all))
	}
	all = append(all, helpExamples(newRootCmd())...)
	for _, c := range all {
		if err := checkParses(c.args, !c.block && !strings.HasPrefix(c.where, "help of")); err != nil {
			t.Errorf("%s: coffer %s\n\t%v", c.where, strings.Join(c.args, " "), err)
		}
	}
}

// TestDocCommandsParseCatchesDrift checks that the check above can fail.
func TestDocCommandsParseCatchesDrift(t *testing.T) {
	for _, line := range []string{
		"coffer key describe alias/x --no-such-flag",
		"coffer keys list",
		"coffer key lst",
		"coffer bench --json-out x",
		"coffer encrypt --output-file x.cfe in.txt",
		"coffer encrypt --key k -o x.cfe in.txt",
		"coffer key list -o sarif",
	} {
		if err := checkParses(shellWords(line)[1:], false); err == nil {
			t.Errorf("%s parses; want an error", line)
		}
	}
	got := shellCoffer(`eval "$(coffer auth assume-role deploy --export)" | grep x # coffer nope`)
	if len(got) != 1 || got[0] != "coffer auth assume-role deploy --export" {
		t.Errorf("shellCoffer = %q", got)
	}
}

// startDocServer starts a dev server in the test process and points the
// environment at it.
func startDocServer(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	var cfg server.Config
	cfg.Listen = "127.0.0.1:0"
	cfg.Dev, cfg.DevDir = true, dir
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.DiscardHandler)
	go func() { done <- server.Run(ctx, cfg, logger, func(b server.Banner) { ready <- b }) }()
	var ban server.Banner
	select {
	case ban = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("dev server: %v", err)
	case <-time.After(serverStartTimeout):
		cancel()
		t.Fatal("dev server did not start")
	}
	t.Cleanup(func() { cancel(); <-done })
	t.Setenv("COFFER_ADDR", ban.Addr)
	t.Setenv("COFFER_TOKEN", ban.RootToken)
}

func TestDocCommandsRun(t *testing.T) {
	for _, v := range []string{"COFFER_CACERT", "COFFER_SKIP_VERIFY", "COFFER_ROLE", "COFFER_ACCESS_KEY_ID",
		"COFFER_SECRET_ACCESS_KEY", "COFFER_TOKEN_FILE", "COFFER_CLIENT_CERT", "COFFER_CLIENT_KEY"} {
		t.Setenv(v, "")
	}
	t.Setenv("COFFER_TOKEN_CACHE", "0")
	// Destructive commands ask on a terminal, where the reader of the
	// docs types them: answer yes.
	defer func(f func(*cobra.Command) bool) { isTerminal = f }(isTerminal)
	isTerminal = func(*cobra.Command) bool { return true }

	for _, page := range docPages(t) {
		var cmds []docCommand
		for _, c := range extractDocCommands(t, page) {
			if c.block {
				cmds = append(cmds, c)
			}
		}
		if len(cmds) == 0 {
			continue
		}
		t.Run(filepath.Base(page), func(t *testing.T) {
			startDocServer(t)
			t.Chdir(t.TempDir())
		next:
			for _, c := range cmds {
				for _, s := range docSkips {
					if s.pattern.MatchString(c.line) {
						t.Logf("%s: skipped %q: %s", c.where, c.line, s.reason)
						continue next
					}
				}
				var stdout, stderr strings.Builder
				code := run(context.Background(), c.args, strings.NewReader("y\n"), &stdout, &stderr)
				if code == exitCodeUsage {
					t.Errorf("%s: %s\n\texit %d (usage error): %s", c.where, c.line, code, stderr.String())
				}
			}
		})
	}
}

// docWalkthrough is a marked shell block.
type docWalkthrough struct {
	where string
	lines []string
}

// extractWalkthroughs returns the shell blocks of a page marked with
// "<!-- doctest: run -->", as logical lines.
func extractWalkthroughs(t *testing.T, path string) []docWalkthrough {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(path, "../../")
	lines := strings.Split(string(data), "\n")
	var out []docWalkthrough
	for i := 0; i+1 < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "<!-- doctest: run -->" {
			continue
		}
		if m := fenceRe.FindStringSubmatch(lines[i+1]); m == nil || m[1] != "sh" {
			t.Fatalf("%s:%d: a doctest marker must come right before a ```sh block", name, i+1)
		}
		w := docWalkthrough{where: fmt.Sprintf("%s:%d", name, i+2)}
		for j := i + 2; j < len(lines) && fenceRe.FindStringSubmatch(lines[j]) == nil; j++ {
			l := strings.TrimSpace(lines[j])
			for strings.HasSuffix(l, "\\") && j+1 < len(lines) {
				j++
				l = strings.TrimSuffix(l, "\\") + " " + strings.TrimSpace(lines[j])
			}
			if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "export ") || strings.HasPrefix(l, "read ") {
				continue
			}
			w.lines = append(w.lines, strings.ReplaceAll(l, "go run ./cmd/coffer", "coffer"))
		}
		out = append(out, w)
	}
	return out
}

func TestDocWalkthroughs(t *testing.T) {
	dir := t.TempDir()
	n := 0
	for _, page := range docPages(t) {
		for _, w := range extractWalkthroughs(t, page) {
			n++
			var b strings.Builder
			fmt.Fprintf(&b, "# %s, run as written.\ncoffer-server\nenv COFFER_TOKEN_CACHE=0\n", w.where)
			for _, l := range w.lines {
				fmt.Fprintf(&b, "exec sh -c '%s'\n", strings.ReplaceAll(l, "'", "''"))
			}
			name := strings.NewReplacer("/", "_", ".", "_", ":", "_").Replace(w.where) + ".txtar"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n < 2 {
		t.Fatalf("found %d marked walkthroughs; README.md and docs/cli.md have one each", n)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 dir,
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
	})
}
