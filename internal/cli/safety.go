package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cofferkms/coffer/internal/sys"
)

// This file holds what keeps a user from hurting themselves: secrets
// passed as arguments are warned about, destructive commands ask first,
// and `coffer version` says what is running.

// annotSecret marks a flag whose value is a secret.
const annotSecret = "coffer.secret"

// markSecretFlag marks the flag name of fs as carrying a secret: giving it
// on the command line prints a warning (argv is visible in ps and stays in
// the shell history). hint says where the secret should come from.
func markSecretFlag(fs *pflag.FlagSet, name, hint string) {
	_ = fs.SetAnnotation(name, annotSecret, []string{hint})
}

// warnSecretFlags warns on standard error about every secret flag given on
// the command line.
func warnSecretFlags(cmd *cobra.Command) {
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if hint, ok := f.Annotations[annotSecret]; ok {
			warnSecretArg(cmd, "--"+f.Name, strings.Join(hint, ""))
		}
	})
}

// warnSecretArg warns that what (a flag or an argument) put a secret on the
// command line, and says where to give it instead.
func warnSecretArg(cmd *cobra.Command, what, hint string) {
	fmt.Fprintf(cmd.ErrOrStderr(), "coffer: warning: %s puts a secret on the command line, where ps and the shell history can see it; %s\n", what, hint)
}

// oldFlagNames keeps old spellings of flags working, hidden from help:
// renames maps each old name to the current one.
func oldFlagNames(cmd *cobra.Command, renames map[string]string) {
	prev := cmd.Flags().GetNormalizeFunc()
	cmd.Flags().SetNormalizeFunc(func(fs *pflag.FlagSet, name string) pflag.NormalizedName {
		if n, ok := renames[name]; ok {
			name = n
		}
		return prev(fs, name)
	})
}

// addYesFlag gives a destructive command --yes (-y).
func addYesFlag(cmd *cobra.Command) {
	cmd.Flags().BoolP(flagYes, "y", false, "do not ask for confirmation (for scripts)")
}

// isTerminal reports whether the command's standard input is a terminal;
// tests replace it.
var isTerminal = func(cmd *cobra.Command) bool {
	_, tty := stdinIsTerminal(cmd)
	return tty
}

// confirm asks before a destructive action: what describes it ("delete the
// role deploy and revoke its tokens"). With --yes it goes ahead; on a
// terminal it asks and goes ahead on y or yes; otherwise (a script without
// --yes) it refuses with a usage error, so nothing is done by accident.
func confirm(cmd *cobra.Command, what string) error {
	if yes, _ := cmd.Flags().GetBool(flagYes); yes {
		return nil
	}
	if !isTerminal(cmd) {
		return usageErrorf("%s would %s: pass --yes to confirm (standard input is not a terminal to ask on)", cmd.CommandPath(), what)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "This will %s. Continue? [y/N] ", what)
	line, err := readLine(cmd.InOrStdin())
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr())
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &exitError{code: exitCodeError, err: fmt.Errorf("not confirmed; nothing was done")}
}

// versionInfo is what `coffer version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// currentVersion returns the version of this binary, with the VCS
// revision it was built from when the build recorded one.
func currentVersion() versionInfo {
	v := versionInfo{Version: sys.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

// String formats the version on one line, as --version prints it.
func (v versionInfo) String() string {
	s := "coffer " + v.Version
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if v.Modified {
			c += "+modified"
		}
		s += " (" + c + ")"
	}
	return s + " " + v.GoVersion + " " + v.Platform
}

// newVersionCmd builds `coffer version`.
func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of this coffer binary",
		Long:    "Print the version of this coffer binary; 'coffer operator status' shows the server's.",
		Example: "  coffer version\n  coffer version -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := currentVersion()
			if wantJSON(cmd) {
				return printData(cmd, v)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), v)
			return err
		},
	}
}
