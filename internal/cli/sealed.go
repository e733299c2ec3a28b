package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/envelope"
	"github.com/cofferkms/coffer/internal/sealedfile"
)

// Sealed files: coffer seal, unseal, edit and exec seal and open the values
// of YAML, JSON and .env files in place (package sealedfile); only the
// file's data key travels to Coffer.

// readSealable reads a file for seal, unseal or edit and tells its format
// from --format or its name.
func readSealable(path, format string) ([]byte, sealedfile.Format, error) {
	var f sealedfile.Format
	var err error
	if format != "" {
		if f, err = sealedfile.ParseFormat(format); err != nil {
			return nil, "", usageErrorf("invalid --format: %v", err)
		}
	} else if f, err = sealedfile.FormatOf(path); err != nil {
		return nil, "", usageErrorf("%v: pass --format yaml, json or env", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", err
	}
	if !st.Mode().IsRegular() {
		return nil, "", fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > sealedfile.MaxFileSize {
		return nil, "", fmt.Errorf("%s is %d bytes; at most %d can be sealed", path, st.Size(), sealedfile.MaxFileSize)
	}
	data, err := os.ReadFile(path)
	return data, f, err
}

// writeAtomic replaces path with data: a temporary file in the same
// directory, synced and renamed over it. mode is the new file's mode.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op after the rename
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// fileMode returns the permission bits of path, or 0600.
func fileMode(path string) fs.FileMode {
	if st, err := os.Stat(path); err == nil {
		return st.Mode().Perm()
	}
	return 0o600
}

// sealedFileError names the file in a sealedfile error.
func sealedFileError(path string, err error) error {
	if err == nil {
		return nil
	}
	// describeError would print only the server's error; keep the file and
	// what failed, except where its hint helps (no token, no server).
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("%s: %s", path, err.Error())
	}
	return fmt.Errorf("%s: %w", path, err)
}

// sealResult is the JSON output of seal.
type sealResult struct {
	File          string            `json:"file"`
	NewKey        bool              `json:"new_key"`
	Sealed        int               `json:"sealed"`
	AlreadySealed int               `json:"already_sealed"`
	Plaintext     int               `json:"plaintext"`
	Changed       bool              `json:"changed"`
	Context       map[string]string `json:"encryption_context"`
}

// newSealCmd builds `coffer seal`.
func newSealCmd() *cobra.Command {
	var key, only, name, format string
	var recovery []string
	cmd := &cobra.Command{
		Use:   "seal [--key KEY] [--only REGEX] [--name NAME] FILE",
		Short: "Seal the values of a YAML, JSON or .env file in place",
		Long: `Encrypt the values of a YAML, JSON or .env file in place, leaving its keys,
structure and comments readable for review and diffs. In a YAML file that
holds Kubernetes Secret manifests, only the data and stringData values of the
Secrets are sealed; the other documents are left alone.

Each value becomes ENC[coffer:v1,...], sealed under the file's data key and
bound to its path in the file (and, for a Secret, to its namespace and name),
so a value cannot be moved to another key, Secret or file. A "coffer" block
(a "# coffer:" line in a .env file) holds the data key wrapped by Coffer under
--key, the encryption context and a MAC over all the sealed values, so a
removed, added, swapped or altered value is detected. docs/formats.md
describes the format.

A new file needs --key; its encryption context is {file: NAME} (--name, by
default the path as given), plus the namespace and name of the Secret when
the file holds exactly one. --only seals only the values under a key (or the
variables) matching the regular expression; the others stay plaintext and are
not authenticated. Sealing is idempotent: in a sealed file, the values already
sealed are kept and the plaintext values added since are sealed with the same
data key (Coffer unwraps it), after the file's MAC is checked. The file is
rewritten atomically; it is left untouched when nothing changes.

The plaintext file is replaced, not shredded: seal a file before its
plaintext reaches shared storage or version control.`,
		Example: `  coffer seal --key alias/app config/app.yaml
  coffer seal --key alias/app --only '^(password|token)$' config.json
  coffer seal --key alias/app app.env
  coffer seal --key alias/k8s --recovery-key alias/dr secret.yaml`,
		Args: exactArgs(1, "FILE"),
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "key id or alias/NAME that wraps the data key of a new file")
	f.StringArrayVar(&recovery, "recovery-key", nil, "also wrap the data key of a new file under `KEY` (repeatable)")
	f.StringVar(&only, "only", "", "seal only the values under keys matching `REGEX` (default: every value)")
	f.StringVar(&name, "name", "", "the file's name in its encryption context (default: FILE as given)")
	f.StringVar(&format, "format", "", "file format: yaml, json or env (default: from the file name)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := args[0]
		if only != "" {
			if _, err := regexp.Compile(only); err != nil {
				return usageErrorf("invalid --only %q: %v", only, err)
			}
		}
		data, ff, err := readSealable(path, format)
		if err != nil {
			return err
		}
		sealed, err := sealedfile.IsSealed(ff, data)
		if err != nil {
			return sealedFileError(path, err)
		}
		if !sealed && key == "" {
			return usageErrorf("--key is required to seal a new file")
		}
		if name == "" && !sealed {
			name = filepath.ToSlash(filepath.Clean(path))
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		opts := sealedfile.Options{Format: ff, Name: name, Only: only,
			Unwrappers: []envelope.Unwrapper{envelope.NewCoffer(c, "")}}
		if !sealed {
			var w envelope.Wrapper = envelope.NewCoffer(c, key)
			if len(recovery) > 0 {
				ws := []envelope.Wrapper{w}
				for _, k := range recovery {
					ws = append(ws, envelope.NewCoffer(c, k))
				}
				w = envelope.Multi(ws...)
			}
			opts.Wrapper = w
		}
		res, err := sealedfile.Seal(cmd.Context(), data, opts)
		if err != nil {
			return sealedFileError(path, err)
		}
		out := sealResult{File: path, NewKey: res.New, Sealed: res.Sealed, AlreadySealed: res.Kept,
			Plaintext: res.Plain, Changed: !bytes.Equal(res.Data, data), Context: res.Context}
		if out.Changed {
			if err := writeAtomic(path, res.Data, fileMode(path)); err != nil {
				return err
			}
		}
		if wantJSON(cmd) {
			return printData(cmd, out)
		}
		msg := fmt.Sprintf("%s: sealed %d new value%s", path, res.Sealed, plural(res.Sealed))
		if res.Kept > 0 {
			msg += fmt.Sprintf(", %d already sealed", res.Kept)
		}
		if res.Plain > 0 {
			msg += fmt.Sprintf(", %d left in plaintext", res.Plain)
		}
		if !out.Changed {
			msg += " (unchanged)"
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), msg)
		return err
	}
	return cmd
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// openSealed reads and opens a sealed file with the server's help.
func openSealed(cmd *cobra.Command, path, format, name string) (*sealedfile.Opened, []byte, sealedfile.Format, error) {
	data, ff, err := readSealable(path, format)
	if err != nil {
		return nil, nil, "", err
	}
	// A file that is not sealed fails before any server is needed.
	if sealed, err := sealedfile.IsSealed(ff, data); err != nil {
		return nil, nil, "", sealedFileError(path, err)
	} else if !sealed {
		return nil, nil, "", fmt.Errorf("%s: %w: it has no coffer metadata (seal it first with 'coffer seal')", path, sealedfile.ErrNotSealed)
	}
	c, err := newClient(cmd)
	if err != nil {
		return nil, nil, "", err
	}
	o, err := sealedfile.Open(cmd.Context(), data, sealedfile.Options{
		Format: ff, Name: name, Unwrappers: []envelope.Unwrapper{envelope.NewCoffer(c, "")}})
	if err != nil {
		return nil, nil, "", sealedFileError(path, err)
	}
	return o, data, ff, nil
}

// newUnsealCmd builds `coffer unseal`.
func newUnsealCmd() *cobra.Command {
	var inPlace bool
	var name, format string
	cmd := &cobra.Command{
		Use:   "unseal [--in-place] FILE",
		Short: "Decrypt a file sealed by 'coffer seal' (to unseal the server: 'coffer operator unseal')",
		Long: `Decrypt the values of a file sealed by 'coffer seal' and print the file with
its plaintext values and without its coffer block. Coffer unwraps the file's
data key; every sealed value must authenticate at its place in the file, the
MAC must match, and no value the file's selection seals may be plaintext, or
nothing is printed. A Secret's data values get their base64 back.

This command works on files. To unseal the Coffer server itself after a
restart, use 'coffer operator unseal'.

With --in-place the file is rewritten with the plaintext (a temporary file of
mode 0600, renamed over it). --name requires the file to have been sealed
under that name.`,
		Example: `  coffer unseal config/app.yaml
  coffer unseal secret.yaml | kubectl apply -f -
  coffer unseal --in-place app.env`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("coffer unseal takes a FILE to decrypt (to unseal the Coffer server, run 'coffer operator unseal')")
			}
			return exactArgs(1, "FILE")(cmd, args)
		},
	}
	cmd.Flags().BoolVar(&inPlace, "in-place", false, "rewrite FILE with the plaintext instead of printing it")
	cmd.Flags().StringVar(&name, "name", "", "require the file to have been sealed under `NAME`")
	cmd.Flags().StringVar(&format, "format", "", "file format: yaml, json or env (default: from the file name)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := args[0]
		if _, err := os.Stat(path); err != nil && looksLikeShare(path) {
			// Never repeat it: it is a secret, already in the shell
			// history.
			warnSecretArg(cmd, "the argument", "it looks like an unseal share")
			return usageErrorf("coffer unseal decrypts sealed files, and no such file exists; to unseal the Coffer server, run 'coffer operator unseal' (it prompts for the share)")
		}
		o, _, _, err := openSealed(cmd, path, format, name)
		if err != nil {
			return err
		}
		defer o.Close()
		if inPlace {
			return writeAtomic(path, o.Plaintext(), 0o600)
		}
		_, err = cmd.OutOrStdout().Write(o.Plaintext())
		return err
	}
	return cmd
}

// looksLikeShare reports whether s has the shape of an unseal share
// (docs/formats.md): base64 of 38 bytes starting with version 1.
func looksLikeShare(s string) bool {
	b, err := decodeBase64(s)
	return err == nil && len(b) == 38 && b[0] == 1
}

// newEditCmd builds `coffer edit`.
func newEditCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "edit FILE",
		Short: "Edit a sealed file in $EDITOR and seal it again",
		Long: `Decrypt a sealed file into a private temporary file (mode 0600 in a new
directory of mode 0700), open it in $VISUAL or $EDITOR (vi by default), and
when the editor exits seal the result again under the same data key,
context and selection. Values that did not change keep their sealed form, so
a diff shows only what changed; when nothing changed the file is left
untouched. The temporary files are overwritten with zeros and removed
afterwards, whatever happens.

If the edited file does not parse, and standard input is a terminal, the
editor can be opened again; otherwise the edit is discarded.`,
		Example: "  coffer edit config/app.yaml\n  EDITOR='code --wait' coffer edit app.env",
		Args:    exactArgs(1, "FILE"),
	}
	cmd.Flags().StringVar(&format, "format", "", "file format: yaml, json or env (default: from the file name)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := args[0]
		o, _, _, err := openSealed(cmd, path, format, "")
		if err != nil {
			return err
		}
		defer o.Close()
		dir, err := os.MkdirTemp("", "coffer-edit-*")
		if err != nil {
			return err
		}
		defer shredDir(dir)
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
		tmp := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(tmp, o.Plaintext(), 0o600); err != nil {
			return err
		}
		for {
			if err := runEditor(cmd, tmp); err != nil {
				return err
			}
			edited, err := os.ReadFile(tmp)
			if err != nil {
				return err
			}
			if bytes.Equal(edited, o.Plaintext()) {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: no changes\n", path)
				return nil
			}
			sealed, err := o.Reseal(edited)
			clear(edited)
			if err == nil {
				if err := writeAtomic(path, sealed, fileMode(path)); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: sealed\n", path)
				return nil
			}
			if !askReedit(cmd, err) {
				return fmt.Errorf("%s: %w; the edit was discarded", path, err)
			}
		}
	}
	return cmd
}

// runEditor runs $VISUAL or $EDITOR (a shell command line) on file.
func runEditor(cmd *cobra.Command, file string) error {
	editor := os.Getenv("VISUAL")
	if editor == "" {
		editor = os.Getenv("EDITOR")
	}
	if editor == "" {
		editor = "vi"
	}
	ed := exec.CommandContext(cmd.Context(), "/bin/sh", "-c", editor+` "$1"`, "coffer-edit", file)
	ed.Stdin, ed.Stdout, ed.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	if err := ed.Run(); err != nil {
		return fmt.Errorf("editor %q failed: %w; the edit was discarded", editor, err)
	}
	return nil
}

// askReedit asks, on a terminal, whether to open the editor again.
func askReedit(cmd *cobra.Command, err error) bool {
	if _, tty := stdinIsTerminal(cmd); !tty {
		return false
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "coffer: %v\nPress Enter to edit again, or Ctrl-D to discard the edit: ", err)
	_, rerr := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	return rerr == nil
}

// shredDir overwrites every regular file under dir with zeros and removes
// the directory (the editor may have left backup or swap files in it).
func shredDir(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			shredFile(p)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

// shredFile overwrites a file with zeros, syncs it and removes it. On
// journaling or copy-on-write file systems and SSDs the old blocks may
// survive; the point is that no plaintext stays reachable by name.
func shredFile(p string) {
	if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
		if st, err := f.Stat(); err == nil {
			zeros := make([]byte, 32<<10)
			for left := st.Size(); left > 0; {
				n := int64(len(zeros))
				if left < n {
					n = left
				}
				if _, err := f.Write(zeros[:n]); err != nil {
					break
				}
				left -= n
			}
			_ = f.Sync()
		}
		_ = f.Close()
	}
	_ = os.Remove(p)
}

// newExecCmd builds `coffer exec`.
func newExecCmd() *cobra.Command {
	var envFiles []string
	cmd := &cobra.Command{
		Use:   "exec (--env-file FILE | --secret NAME[#FIELD][=ENV] | --secret PREFIX*)... -- COMMAND [ARG]...",
		Short: "Run a command with secrets or the variables of sealed .env files in its environment",
		Long: `Decrypt sealed .env files in memory and run COMMAND with their variables added
to this process's environment (a variable of a later file wins, and the files
win over the inherited environment). Nothing is written to disk. On Unix
coffer replaces itself with COMMAND (execve), so signals go straight to it
and its exit status is the command's; this makes 'coffer exec' usable as a
container entrypoint.

The files must be sealed ('coffer seal'): every sealed value must
authenticate and the MAC must match, or COMMAND is not run. Variables the
file's --only selection left in plaintext are passed as they are.

The Coffer credential that decrypted the files or read the secrets
(COFFER_TOKEN, COFFER_ACCESS_KEY_ID, COFFER_SECRET_ACCESS_KEY, COFFER_ROLE,
COFFER_TOKEN_FILE, COFFER_CLUSTER, COFFER_CLIENT_CERT, COFFER_CLIENT_KEY) is
not passed on to COMMAND unless --pass-credentials (all of them) or
--pass-env VARIABLE (that one) is given: the command gets its secrets, not
the power to read everything else the credential may read. A file that sets
one of these variables itself still sets it.

--secret reads secrets of the Coffer secrets manager with the caller's
credential and passes their fields to COMMAND: NAME#FIELD=ENV sets ENV to one
field, NAME=ENV a secret's only field, NAME every field and PREFIX* every
field of every secret whose name starts with PREFIX (variables named after the
fields: upper case, other characters than A-Z 0-9 _ become _; two values for
one variable are an error). If any secret cannot be read, COMMAND is not run.
With --file-dir DIR the values are written as files of mode 0400 named like
the variables, in DIR (mode 0700, on a tmpfs unless --allow-disk), instead of
the environment, and removed when COMMAND exits. --watch checks the current
versions every --interval and restarts COMMAND on a new version, or with
--on-change signal:HUP rewrites the files and signals it. With --file-dir or
--watch coffer stays as COMMAND's parent, forwards INT, TERM, HUP, QUIT, USR1
and USR2 to it and exits with its code. docs/secrets.md, "Delivering secrets
to a process", has the details.`,
		Example: `  coffer exec --env-file app.sealed.env -- ./app --port 8080
  coffer exec --env-file base.env --env-file prod.env -- sh -c 'echo $DB_HOST'
  coffer exec --secret team-a/web/db#password=DB_PASSWORD --secret 'team-a/api/*' -- ./app
  coffer exec --secret 'app/*' --file-dir /dev/shm/app --watch --on-change signal:HUP -- ./app`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("coffer exec needs a COMMAND to run after --")
			}
			return nil
		},
	}
	var passCreds bool
	var passEnv []string
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringArrayVar(&envFiles, "env-file", nil, "sealed .env `FILE` to decrypt into the environment (repeatable, required)")
	cmd.Flags().BoolVar(&passCreds, "pass-credentials", false, "pass every Coffer credential variable (COFFER_TOKEN, the access key, COFFER_ROLE, COFFER_TOKEN_FILE, ...) on to COMMAND")
	cmd.Flags().StringArrayVar(&passEnv, "pass-env", nil, "pass this one Coffer credential `VARIABLE` on to COMMAND (repeatable)")
	secretOpts := addSecretExecFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(envFiles) == 0 && !secretOpts.used() {
			return usageErrorf("--env-file or --secret is required")
		}
		if err := checkPassEnv(passEnv); err != nil {
			return err
		}
		env := withoutCredentials(os.Environ(), passCreds, passEnv)
		for _, path := range envFiles {
			o, _, _, err := openSealed(cmd, path, string(sealedfile.Dotenv), "")
			if err != nil {
				return err
			}
			for _, v := range o.Values() {
				env = setEnv(env, v.Key, v.Value)
			}
			o.Close()
		}
		env, sup, err := prepareSecretExec(cmd, secretOpts, args, env)
		if err != nil {
			return err
		}
		prog, err := exec.LookPath(args[0])
		if err != nil {
			if sup != nil && sup.files != nil {
				sup.files.remove()
			}
			return &exitError{code: 127, err: err}
		}
		if sup != nil {
			return sup.run(prog, args, env)
		}
		if runtime.GOOS != "windows" {
			// execve: the command takes over this process.
			err := syscall.Exec(prog, args, env)
			return &exitError{code: 126, err: fmt.Errorf("cannot run %s: %w", args[0], err)}
		}
		return runChild(cmd, prog, args, env)
	}
	return cmd
}

// setEnv sets key=value in env, replacing an earlier value.
func setEnv(env []string, key, value string) []string {
	env = slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == key
	})
	return append(env, key+"="+value)
}

// runChild runs the command as a child where execve is not available,
// forwarding interrupts and passing its exit code on.
func runChild(cmd *cobra.Command, prog string, args, env []string) error {
	child := exec.Command(prog, args[1:]...)
	child.Env = env
	child.Stdin, child.Stdout, child.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := child.Start(); err != nil {
		return &exitError{code: 126, err: err}
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = child.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := child.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.ExitCode()}
	}
	return err
}
