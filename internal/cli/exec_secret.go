package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// coffer exec --secret: values of Coffer secrets delivered to a command's
// environment or to files on a tmpfs, optionally watched for new versions.
// docs/secrets.md, "Delivering secrets to a process", describes the rules.

// secretExecOptions are the flags of coffer exec that deliver secrets.
type secretExecOptions struct {
	specs       []string
	fileDir     string
	allowDisk   bool
	watch       bool
	interval    time.Duration
	onChange    string
	killTimeout time.Duration
}

// addSecretExecFlags adds the --secret flags to coffer exec.
func addSecretExecFlags(cmd *cobra.Command) *secretExecOptions {
	o := &secretExecOptions{}
	f := cmd.Flags()
	f.StringArrayVar(&o.specs, "secret", nil, "deliver `NAME[#FIELD][=ENV]` or PREFIX* (every secret under PREFIX) to COMMAND (repeatable)")
	f.StringVar(&o.fileDir, "file-dir", "", "write the secrets as files (mode 0400) in `DIR` on a tmpfs instead of the environment")
	f.BoolVar(&o.allowDisk, "allow-disk", false, "let --file-dir be on a disk file system (values then reach the disk)")
	f.BoolVar(&o.watch, "watch", false, "restart or signal COMMAND on a new current version (waited for on the server, checked again every --interval)")
	f.DurationVar(&o.interval, "interval", 30*time.Second, "how often --watch reads the secrets' current versions (and the longest it waits on the server in between)")
	f.StringVar(&o.onChange, "on-change", "restart", "what --watch does on a new version: restart, or signal:NAME (HUP, USR1, ...; needs --file-dir)")
	f.DurationVar(&o.killTimeout, "kill-timeout", 10*time.Second, "on a restart, how long COMMAND has to exit after SIGTERM before SIGKILL")
	return o
}

// used reports whether any --secret was given.
func (o *secretExecOptions) used() bool { return len(o.specs) > 0 }

// secretSpec is one parsed --secret.
type secretSpec struct {
	raw    string
	name   string // the secret's name, or the prefix
	prefix bool   // NAME was PREFIX*: every secret whose name starts with it
	field  string // "" when not named
	env    string // "" when derived from the field names
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseSecretSpec parses NAME[#FIELD][=ENV] or PREFIX*.
func parseSecretSpec(s string) (secretSpec, error) {
	sp := secretSpec{raw: s}
	left, env, hasEnv := strings.Cut(s, "=")
	if hasEnv {
		if !envNameRE.MatchString(env) {
			return sp, usageErrorf("--secret %s: %q is not a variable name (letters, digits and _, not starting with a digit)", s, env)
		}
		sp.env = env
	}
	name, field, hasField := strings.Cut(left, "#")
	if hasField {
		if field == "" || strings.ContainsAny(field, "#*/") {
			return sp, usageErrorf("--secret %s: the field after # must be a field name", s)
		}
		sp.field = field
	}
	if strings.Contains(name, "*") {
		if strings.Index(name, "*") != len(name)-1 {
			return sp, usageErrorf("--secret %s: * is only allowed at the end (PREFIX*: every secret under PREFIX)", s)
		}
		if hasEnv || hasField {
			return sp, usageErrorf("--secret %s: a PREFIX* takes neither #FIELD nor =ENV (its variables are named after the fields)", s)
		}
		sp.prefix, name = true, strings.TrimSuffix(name, "*")
	} else if name == "" {
		return sp, usageErrorf("--secret %s: name a secret (NAME[#FIELD][=ENV] or PREFIX*)", s)
	}
	sp.name = name
	return sp, nil
}

// deliveryEnvName derives a variable (and file) name from a field name:
// upper case, every character other than A-Z 0-9 _ becomes _, and a
// leading digit gets a _ in front.
func deliveryEnvName(field string) string {
	b := []byte(strings.ToUpper(field))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		return "_" + string(b)
	}
	return string(b)
}

// deliveredValue is one value to deliver: the variable or file name, where
// it comes from (NAME#FIELD, never the value) and the value.
type deliveredValue struct {
	target, source, value string
}

// secretSet is what one resolution read: the values in a stable order and
// the version of each secret read.
type secretSet struct {
	values   []deliveredValue
	versions map[string]uint32
}

// secretFetchError says which secret could not be read; it never holds a
// value.
type secretFetchError struct {
	what string // `secret "db"` or `secrets under "app/"`
	err  error
}

// Error names the secret and the server's reason.
func (e *secretFetchError) Error() string { return "cannot read " + e.what + ": " + e.err.Error() }

// Unwrap returns the client's error.
func (e *secretFetchError) Unwrap() error { return e.err }

// listSecretNames returns the names of the secrets under prefix that are
// not deleted, every page.
func listSecretNames(ctx context.Context, c *client.Client, prefix string) (map[string]uint32, error) {
	out := map[string]uint32{}
	after := ""
	for {
		page, err := c.SecretList(ctx, client.SecretListOptions{Prefix: prefix, After: after})
		if err != nil {
			return nil, err
		}
		for _, e := range page.Secrets {
			if e.DeletedAt == nil {
				out[e.Name] = e.CurrentVersion
			}
		}
		if page.Next == "" || page.Next == after {
			return out, nil
		}
		after = page.Next
	}
}

// startupVariable reports whether a variable name is one that the dynamic
// loader, a shell or an interpreter acts on when a process starts: set
// from a field name a secret's writer chose, it would run their code in
// COMMAND (LD_PRELOAD, BASH_ENV, PATH, ...).
func startupVariable(name string) bool {
	// LUA_INIT and LUA_INIT_5_x: code Lua runs before the script.
	if strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "DYLD_") || strings.HasPrefix(name, "LUA_INIT") {
		return true
	}
	switch name {
	// GLIBC_TUNABLES: parsed by the loader of every process (its parser
	// has had overflows); ZDOTDIR: where zsh reads .zshenv even for -c;
	// OPENSSL_CONF: its config can load a shared library at start.
	case "GLIBC_TUNABLES", "ZDOTDIR", "OPENSSL_CONF",
		"PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH", "GCONV_PATH",
		"NODE_OPTIONS", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB",
		"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS":
		return true
	}
	return false
}

// resolveSecrets reads every secret the specs name and maps their fields
// to variable names. Any secret that cannot be read, a missing field, an
// ambiguous NAME=ENV, a prefix with no secret, two values for one name or,
// when toEnv, a name derived from a field that is a startup variable or a
// COFFER_ variable is an error: nothing is delivered then.
func resolveSecrets(ctx context.Context, c *client.Client, specs []secretSpec, toEnv bool) (*secretSet, error) {
	set := &secretSet{versions: map[string]uint32{}}
	read := map[string]*client.SecretValue{}
	get := func(name string) (*client.SecretValue, error) {
		if v, ok := read[name]; ok {
			return v, nil
		}
		v, err := c.SecretGet(ctx, name, client.SecretGetOptions{})
		if err != nil {
			return nil, &secretFetchError{what: fmt.Sprintf("secret %q", name), err: err}
		}
		read[name] = v
		set.versions[name] = v.Version
		return v, nil
	}
	from := map[string]string{} // target -> source
	add := func(target, source, value string) error {
		if prev, ok := from[target]; ok {
			return fmt.Errorf("%s would be set by both %s and %s: name one of them with NAME#FIELD=ENV", target, prev, source)
		}
		from[target] = source
		set.values = append(set.values, deliveredValue{target: target, source: source, value: value})
		return nil
	}
	// derived checks a name made from a field name (not given as =ENV).
	derived := func(target, source string) error {
		if toEnv && startupVariable(target) {
			return fmt.Errorf("%s would set %s, a variable read at process start (loader, shell or interpreter); name it explicitly with %s=%s if that is meant", source, target, source, target)
		}
		if toEnv && cofferVariable(target) {
			return fmt.Errorf("%s would set %s, which configures COMMAND's own Coffer client (its server or credential); name it explicitly with %s=%s if that is meant", source, target, source, target)
		}
		return nil
	}
	addAll := func(v *client.SecretValue) error {
		for _, f := range sortedFields(v.Fields) {
			if err := derived(deliveryEnvName(f), v.Name+"#"+f); err != nil {
				return err
			}
			if err := add(deliveryEnvName(f), v.Name+"#"+f, v.Fields[f]); err != nil {
				return err
			}
		}
		return nil
	}
	for _, sp := range specs {
		if sp.prefix {
			names, err := listSecretNames(ctx, c, sp.name)
			if err != nil {
				return nil, &secretFetchError{what: fmt.Sprintf("the secrets under %q", sp.name), err: err}
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("--secret %s: no secret's name starts with %q", sp.raw, sp.name)
			}
			for _, n := range sortedKeys(names) {
				v, err := get(n)
				if err != nil {
					return nil, err
				}
				if err := addAll(v); err != nil {
					return nil, err
				}
			}
			continue
		}
		v, err := get(sp.name)
		if err != nil {
			return nil, err
		}
		switch {
		case sp.field != "":
			val, ok := v.Fields[sp.field]
			if !ok {
				return nil, fmt.Errorf("secret %q has no field %q (its fields: %s)", sp.name, sp.field, strings.Join(sortedFields(v.Fields), ", "))
			}
			target := sp.env
			if target == "" {
				target = deliveryEnvName(sp.field)
				if err := derived(target, sp.name+"#"+sp.field); err != nil {
					return nil, err
				}
			}
			err = add(target, sp.name+"#"+sp.field, val)
		case sp.env != "":
			if len(v.Fields) != 1 {
				return nil, fmt.Errorf("secret %q has %d fields (%s): name the one for %s as %s#FIELD=%s",
					sp.name, len(v.Fields), strings.Join(sortedFields(v.Fields), ", "), sp.env, sp.name, sp.env)
			}
			f := sortedFields(v.Fields)[0]
			err = add(sp.env, sp.name+"#"+f, v.Fields[f])
		default:
			err = addAll(v)
		}
		if err != nil {
			return nil, err
		}
	}
	return set, nil
}

func sortedFields(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeys(m map[string]uint32) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// currentVersions asks the server for the current version of every secret
// the specs name, without reading values: the metadata of a named secret
// (its value when the caller may not read metadata) and a list for a
// prefix.
func currentVersions(ctx context.Context, c *client.Client, specs []secretSpec) (map[string]uint32, error) {
	out := map[string]uint32{}
	for _, sp := range specs {
		if sp.prefix {
			names, err := listSecretNames(ctx, c, sp.name)
			if err != nil {
				return nil, &secretFetchError{what: fmt.Sprintf("the secrets under %q", sp.name), err: err}
			}
			for n, v := range names {
				out[n] = v
			}
			continue
		}
		if _, ok := out[sp.name]; ok {
			continue
		}
		md, err := c.SecretMetadata(ctx, sp.name)
		var apiErr *client.APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusForbidden {
			// secret:Read without secret:List: the version of a read.
			v, gerr := c.SecretGet(ctx, sp.name, client.SecretGetOptions{})
			if gerr != nil {
				return nil, &secretFetchError{what: fmt.Sprintf("secret %q", sp.name), err: gerr}
			}
			out[sp.name] = v.Version
			continue
		}
		if err != nil {
			return nil, &secretFetchError{what: fmt.Sprintf("secret %q", sp.name), err: err}
		}
		if md.DeletedAt != nil {
			return nil, fmt.Errorf("secret %q was deleted", sp.name)
		}
		out[sp.name] = md.CurrentVersion
	}
	return out, nil
}

// onChangeSignal parses --on-change: restart (nil) or signal:NAME.
func onChangeSignal(s string) (syscall.Signal, bool, error) {
	if s == "restart" {
		return 0, false, nil
	}
	name, ok := strings.CutPrefix(s, "signal:")
	if !ok {
		return 0, false, usageErrorf("invalid --on-change %q: restart or signal:NAME (HUP, USR1, USR2, TERM, INT, QUIT)", s)
	}
	sigs := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
		"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT}
	sig, ok := sigs[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
	if !ok {
		return 0, false, usageErrorf("invalid --on-change %q: the signal is one of HUP, USR1, USR2, TERM, INT, QUIT", s)
	}
	return sig, true, nil
}

// secretExec is a prepared coffer exec --secret: the child's environment
// and, when coffer must stay (files to remove, secrets to watch), what it
// supervises.
type secretExec struct {
	cmd      *cobra.Command
	c        *client.Client
	opts     *secretExecOptions
	specs    []secretSpec
	baseEnv  []string
	set      *secretSet
	files    *secretFiles
	sigs     chan os.Signal // caught since the files were written
	signal   syscall.Signal
	doSignal bool
}

// prepareSecretExec checks the --secret flags, reads every secret (fail
// closed) and returns the child's environment. It returns a non-nil
// *secretExec when coffer has to run COMMAND as a child (--file-dir,
// --watch); otherwise the caller replaces itself with COMMAND.
func prepareSecretExec(cmd *cobra.Command, o *secretExecOptions, args, env []string) ([]string, *secretExec, error) {
	f := cmd.Flags()
	if !o.used() {
		for _, name := range []string{"file-dir", "allow-disk", "watch", "interval", "on-change", "kill-timeout"} {
			if f.Changed(name) {
				return nil, nil, usageErrorf("--%s needs --secret", name)
			}
		}
		return env, nil, nil
	}
	if !o.watch {
		for _, name := range []string{"interval", "on-change", "kill-timeout"} {
			if f.Changed(name) {
				return nil, nil, usageErrorf("--%s needs --watch", name)
			}
		}
	}
	if o.allowDisk && o.fileDir == "" {
		return nil, nil, usageErrorf("--allow-disk needs --file-dir")
	}
	if o.interval < time.Second {
		return nil, nil, usageErrorf("invalid --interval %s: at least 1s", o.interval)
	}
	sig, doSignal, err := onChangeSignal(o.onChange)
	if err != nil {
		return nil, nil, err
	}
	if doSignal && o.fileDir == "" {
		return nil, nil, usageErrorf("--on-change %s needs --file-dir: a running process's environment cannot change, so new values reach it only as files (or use --on-change restart)", o.onChange)
	}
	specs := make([]secretSpec, 0, len(o.specs))
	for _, s := range o.specs {
		sp, err := parseSecretSpec(s)
		if err != nil {
			return nil, nil, err
		}
		specs = append(specs, sp)
	}
	c, err := newClient(cmd)
	if err != nil {
		return nil, nil, err
	}
	set, err := resolveSecrets(cmd.Context(), c, specs, o.fileDir == "")
	if err != nil {
		return nil, nil, notStarted(cmd, args[0], err)
	}
	x := &secretExec{cmd: cmd, c: c, opts: o, specs: specs, baseEnv: env, set: set, signal: sig, doSignal: doSignal}
	if o.fileDir != "" {
		files, sigs, err := writeSecretFiles(o.fileDir, o.allowDisk, set.values, args[0])
		if err != nil {
			return nil, nil, err
		}
		x.files, x.sigs = files, sigs
		return env, x, nil
	}
	env = x.childEnv(set)
	if o.watch {
		return env, x, nil
	}
	return env, nil, nil
}

// forwardedSignals are the signals coffer catches while it has files to
// remove, and passes on to COMMAND once it runs.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// filesWrittenHook, when set (tests), runs after the first write of the
// files, before the check for a signal that came meanwhile.
var filesWrittenHook func(sigs <-chan os.Signal)

// writeSecretFiles prepares dir and writes the values in it. The signals
// are caught from before the first file exists (their default action
// would end coffer and leave the files behind); one that came while the
// files were written removes them and ends here, COMMAND not started.
// Otherwise the caught signals wait in sigs for run, which passes them on.
func writeSecretFiles(dir string, allowDisk bool, values []deliveredValue, prog string) (*secretFiles, chan os.Signal, error) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	fail := func(files *secretFiles, err error, code int) (*secretFiles, chan os.Signal, error) {
		if files != nil {
			files.remove()
		}
		signal.Stop(sigs)
		return nil, nil, &exitError{code: code, err: fmt.Errorf("%v; %s was not started", err, prog)}
	}
	files, err := openSecretFiles(dir, allowDisk)
	if err != nil {
		return fail(nil, err, exitCodeError)
	}
	if err := files.write(values); err != nil {
		return fail(files, err, exitCodeError)
	}
	if filesWrittenHook != nil {
		filesWrittenHook(sigs)
	}
	select {
	case s := <-sigs:
		code := exitCodeError
		if n, ok := s.(syscall.Signal); ok {
			code = 128 + int(n)
		}
		return fail(files, fmt.Errorf("signal %q arrived while the secret files were written; they were removed", s), code)
	default:
	}
	return files, sigs, nil
}

// notStarted reports an error that kept COMMAND from starting.
func notStarted(cmd *cobra.Command, prog string, err error) error {
	msg := err.Error()
	var fe *secretFetchError
	if errors.As(err, &fe) {
		msg = "cannot read " + fe.what + ": " + describeError(cmd, fe.err)
	}
	return &exitError{code: exitCodeError, err: fmt.Errorf("%s; %s was not started", msg, prog)}
}

// childEnv is the base environment with the secrets' variables (they win
// over inherited and --env-file variables); with --file-dir the values go
// to files and the environment is the base one.
func (x *secretExec) childEnv(set *secretSet) []string {
	if x.files != nil {
		return x.baseEnv
	}
	env := slices.Clone(x.baseEnv)
	for _, v := range set.values {
		env = setEnv(env, v.target, v.value)
	}
	return env
}

// run starts COMMAND, forwards signals to it, watches the secrets when
// asked, and returns COMMAND's exit code as an *exitError. The files are
// removed whatever happens.
func (x *secretExec) run(prog string, args []string, env []string) error {
	if x.files != nil {
		defer x.files.remove()
	}
	// With files, the signals are caught since before they were written
	// (writeSecretFiles); one caught meanwhile goes to COMMAND at once.
	sigs := x.sigs
	if sigs == nil {
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, forwardedSignals...)
	}
	defer signal.Stop(sigs)

	child, done, err := x.start(prog, args, env)
	if err != nil {
		return err
	}
	var tick <-chan time.Time
	if x.opts.watch {
		t := time.NewTicker(x.opts.interval)
		defer t.Stop()
		tick = t.C
	}
	stderr := x.cmd.ErrOrStderr()
	// A check runs beside this loop, one at a time and bounded: a server
	// that does not answer must not keep signals from reaching COMMAND
	// nor its exit from ending coffer (and removing the files).
	ctx, cancel := context.WithCancel(x.cmd.Context())
	defer cancel()
	type checked struct {
		set                     *secretSet
		changed, failed, waited bool
	}
	results := make(chan checked, 1)
	checking := false
	failures, skipUntil := 0, time.Time{}
	startCheck := func() {
		checking = true
		go func() {
			// A check may hold a wait of up to --interval (awaitVersions).
			cctx, ccancel := context.WithTimeout(ctx, watchCheckTimeout+x.opts.interval)
			defer ccancel()
			set, changed, failed, waited := x.check(cctx, stderr)
			results <- checked{set, changed, failed, waited}
		}()
	}
	if x.opts.watch {
		// The first check starts at once: it waits on the server for a
		// new version rather than for the first tick.
		startCheck()
	}
	for {
		select {
		case s := <-sigs:
			_ = child.Process.Signal(s)
		case err := <-done:
			return childExit(err)
		case <-tick:
			if checking || time.Now().Before(skipUntil) {
				continue
			}
			startCheck()
		case r := <-results:
			checking = false
			if r.failed {
				failures++
				skipUntil = time.Now().Add(watchBackoff(x.opts.interval, failures))
			} else {
				failures = 0
			}
			set, changed := r.set, r.changed
			if !changed {
				if r.waited {
					// The server held the wait for --interval: the next
					// one starts now, not at the next tick.
					startCheck()
				}
				continue
			}
			if x.files != nil {
				if err := x.files.write(set.values); err != nil {
					fmt.Fprintf(stderr, "coffer: warning: watch: %v; %s keeps the previous values\n", err, args[0])
					continue
				}
			}
			x.set = set
			if x.doSignal {
				fmt.Fprintf(stderr, "coffer: new secret versions (%s): sending %s to %s\n", describeVersions(set.versions), x.signal, args[0])
				_ = child.Process.Signal(x.signal)
				continue
			}
			fmt.Fprintf(stderr, "coffer: new secret versions (%s): restarting %s\n", describeVersions(set.versions), args[0])
			if exited, err := stopChild(child, done, x.opts.killTimeout); exited {
				// It ended on its own before the restart: pass its
				// status on.
				return childExit(err)
			}
			if child, done, err = x.start(prog, args, x.childEnv(set)); err != nil {
				return err
			}
		}
	}
}

// watchCheckTimeout bounds one --watch check (the versions and, when one
// changed, the values).
const watchCheckTimeout = 30 * time.Second

// start starts COMMAND with env.
func (x *secretExec) start(prog string, args, env []string) (*exec.Cmd, chan error, error) {
	child := exec.Command(prog, args[1:]...)
	child.Args[0] = args[0]
	child.Env = env
	child.Stdin, child.Stdout, child.Stderr = x.cmd.InOrStdin(), x.cmd.OutOrStdout(), x.cmd.ErrOrStderr()
	if err := child.Start(); err != nil {
		return nil, nil, &exitError{code: 126, err: fmt.Errorf("cannot run %s: %w", args[0], err)}
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	return child, done, nil
}

// check reads the current versions (which also finds new secrets under a
// prefix) and, while they are the running ones, waits on the server for
// up to --interval for a new one (awaitVersions); when one changed, it
// reads the secrets again. Errors are reported on w and keep the running
// values. failed reports an error (the next check then waits longer);
// waited that the server held the wait, so the next check may start at
// once.
func (x *secretExec) check(ctx context.Context, w io.Writer) (set *secretSet, changed, failed, waited bool) {
	if ctx.Err() != nil {
		return nil, false, false, false
	}
	cur, err := currentVersions(ctx, x.c, x.specs)
	if err != nil {
		fmt.Fprintf(w, "coffer: warning: watch: %s; keeping the running values\n", describeFetch(x.cmd, err))
		return nil, false, true, false
	}
	if sameVersions(cur, x.set.versions) {
		if changed, waited = awaitVersions(ctx, x.c, cur, x.opts.interval); !changed {
			return nil, false, false, waited
		}
	}
	set, err = resolveSecrets(ctx, x.c, x.specs, x.files == nil)
	if err != nil {
		fmt.Fprintf(w, "coffer: warning: watch: %s; keeping the running values\n", describeFetch(x.cmd, err))
		return nil, false, true, false
	}
	if sameVersions(set.versions, x.set.versions) {
		return nil, false, false, waited
	}
	return set, true, false, waited
}

// watchBackoff is how long --watch waits beyond its interval after the
// failures-th failed check in a row: 1, 3, 7, ... intervals, at most
// maxWatchBackoff, so a server that is down is not asked every interval.
func watchBackoff(interval time.Duration, failures int) time.Duration {
	d := interval
	for i := 1; i < failures && d < maxWatchBackoff; i++ {
		d = 2*d + interval
	}
	return min(d, maxWatchBackoff)
}

// maxWatchBackoff caps watchBackoff.
const maxWatchBackoff = 5 * time.Minute

func describeFetch(cmd *cobra.Command, err error) string {
	var fe *secretFetchError
	if errors.As(err, &fe) {
		return "cannot read " + fe.what + ": " + describeError(cmd, fe.err)
	}
	return err.Error()
}

func sameVersions(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// describeVersions lists NAME@VERSION, sorted.
func describeVersions(m map[string]uint32) string {
	parts := make([]string, 0, len(m))
	for _, n := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s@%d", n, m[n]))
	}
	return strings.Join(parts, ", ")
}

// stopChild sends SIGTERM and waits up to timeout, then SIGKILL. exited
// reports that the child had already ended (err is its status).
func stopChild(child *exec.Cmd, done chan error, timeout time.Duration) (exited bool, err error) {
	select {
	case err := <-done:
		return true, err
	default:
	}
	_ = child.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return false, nil
	case <-time.After(timeout):
		_ = child.Process.Kill()
		<-done
		return false, nil
	}
}

// childExit turns a child's end into coffer's exit: its code, or 128+N
// when a signal N ended it (as a shell reports it).
func childExit(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &exitError{code: 128 + int(ws.Signal())}
		}
		return &exitError{code: ee.ExitCode()}
	}
	return err
}

// secretFiles is a --file-dir: the directory and the files written in it.
type secretFiles struct {
	dir     string
	created bool // coffer created dir and removes it at the end
	names   map[string]bool
}

// Tmpfs and ramfs magic numbers of statfs(2).
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

// openSecretFiles prepares dir for secret files: a new directory of mode
// 0700 (its parent must exist), or an existing empty directory of the
// caller, set to 0700. Unless allowDisk, dir must be on a tmpfs or ramfs.
func openSecretFiles(dir string, allowDisk bool) (*secretFiles, error) {
	sf := &secretFiles{dir: dir, names: map[string]bool{}}
	if err := os.Mkdir(dir, 0o700); err == nil {
		sf.created = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("--file-dir: %w", err)
	} else {
		st, err := os.Lstat(dir)
		if err != nil {
			return nil, fmt.Errorf("--file-dir: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("--file-dir %s is not a directory", dir)
		}
		if !ownedByCaller(st) {
			return nil, fmt.Errorf("--file-dir %s belongs to another user: pass a directory of yours, or one that does not exist yet", dir)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("--file-dir: %w", err)
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("--file-dir %s is not empty: pass an empty directory, or one that does not exist yet", dir)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		sf.remove()
		return nil, fmt.Errorf("--file-dir: %w", err)
	}
	if !allowDisk {
		fsType, err := fsMagic(dir)
		if err != nil {
			sf.remove()
			return nil, fmt.Errorf("--file-dir %s: cannot tell its file system (%v): pass --allow-disk to write there anyway", dir, err)
		}
		if fsType != tmpfsMagic && fsType != ramfsMagic {
			sf.remove()
			return nil, fmt.Errorf("--file-dir %s is not on a tmpfs or ramfs (file system 0x%x): secrets written there reach the disk; use a tmpfs such as /dev/shm or /run, or pass --allow-disk", dir, fsType)
		}
	}
	return sf, nil
}

// write writes every value to its file (mode 0400): a new temporary file
// (O_EXCL) renamed over the name, and removes the files of names no
// longer delivered.
func (sf *secretFiles) write(values []deliveredValue) error {
	now := map[string]bool{}
	for _, v := range values {
		if err := writeSecretFile(sf.dir, v.target, v.value); err != nil {
			return fmt.Errorf("writing %s (from %s) in --file-dir: %w", v.target, v.source, err)
		}
		// Known at once: when a later file fails, remove still finds
		// this one.
		sf.names[v.target] = true
		now[v.target] = true
	}
	for n := range sf.names {
		if !now[n] {
			_ = os.Remove(filepath.Join(sf.dir, n))
			delete(sf.names, n)
		}
	}
	return nil
}

func writeSecretFile(dir, name, value string) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }() // a no-op after the rename
	if _, err := io.WriteString(f, value); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// remove removes the files written, and the directory if coffer created
// it.
func (sf *secretFiles) remove() {
	for n := range sf.names {
		_ = os.Remove(filepath.Join(sf.dir, n))
	}
	if sf.created {
		_ = os.RemoveAll(sf.dir)
	}
}
