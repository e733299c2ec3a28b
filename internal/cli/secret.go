package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// Output formats only `coffer secret get` prints.
const (
	outputEnv = "env"
	outputRaw = "raw"
	// annotSecretFormats marks the command that also prints -o env and
	// -o raw.
	annotSecretFormats = "coffer.secret-formats"
)

// newSecretCmd builds `coffer secret`.
func newSecretCmd() *cobra.Command {
	cmd := groupCmd("secret", "Store, read and manage versioned secrets")
	cmd.Long = `Store, read and manage versioned secrets (docs/secrets.md). A NAME is
path-like, such as team-a/web/db; a secret is a map of fields, each write
makes a new version, and policies name secrets as secret/NAME.`
	cmd.AddCommand(newSecretPutCmd(), newSecretGetCmd(), newSecretListCmd(), newSecretHistoryCmd(), newSecretDeleteCmd(),
		newSecretUndeleteCmd(), newSecretDestroyCmd(), newSecretMetadataCmd(), newSecretRotationCmd(), newSecretRotateCmd())
	return cmd
}

func newSecretPutCmd() *cobra.Command {
	var key, envFile string
	var cas int64
	cmd := &cobra.Command{
		Use:   "put NAME [-]",
		Short: "Write a new version of a secret",
		Long: `Write a new version of the secret NAME from fields: --from-file k=PATH
(repeatable), --from-env-file FILE (KEY=VALUE lines), a JSON object of
fields on standard input (-), or --from-literal k=v (repeatable; the value
is on the command line, visible to ps and the shell history: for tests and
non-secret fields only). --cas N writes only if the current version is N
(0: only if the secret does not exist). --key names the Coffer key of this
and later versions (default: the secret's key, or the default secrets key).`,
		Example: `  coffer secret put team-a/web/db --from-file password=./pw.txt --from-literal user=app
  coffer secret put team-a/web/db --from-env-file db.env --cas 3
  echo '{"password":"..."}' | coffer secret put team-a/web/db -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return exactArgs(1, "NAME")(cmd, args)
			}
			return maxArgs(2, "NAME", "-")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fields := map[string]string{}
			add := func(k, v, from string) error {
				if _, dup := fields[k]; dup {
					return usageErrorf("field %q is given twice (%s)", k, from)
				}
				fields[k] = v
				return nil
			}
			lit, _ := cmd.Flags().GetStringArray("from-literal")
			files, _ := cmd.Flags().GetStringArray("from-file")
			stdin := len(args) == 2
			if stdin && args[1] != "-" {
				return usageErrorf("the second argument can only be - (fields as a JSON object on standard input)")
			}
			if !stdin && len(lit) == 0 && len(files) == 0 && envFile == "" {
				return usageErrorf("no fields given: use --from-file k=PATH, --from-env-file FILE, - (JSON on standard input) or --from-literal k=v")
			}
			for _, kv := range lit {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					// No '=': the argument holds no value to leak.
					return usageErrorf("--from-literal %q: want FIELD=VALUE", boundArg(kv))
				}
				if k == "" {
					// Name the problem, not the argument: it is a value.
					return usageErrorf("--from-literal: the field name before = is empty (want FIELD=VALUE)")
				}
				if err := add(k, v, "--from-literal"); err != nil {
					return err
				}
			}
			for _, kv := range files {
				k, p, ok := strings.Cut(kv, "=")
				if !ok || k == "" || p == "" {
					return usageErrorf("--from-file %q: want FIELD=PATH", kv)
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return fmt.Errorf("reading field %s: %w", k, err)
				}
				if !utf8.Valid(b) {
					return usageErrorf("--from-file %s=%s: the file is not UTF-8 text; encode binary data (base64) first", k, p)
				}
				if err := add(k, string(b), "--from-file"); err != nil {
					return err
				}
			}
			if envFile != "" {
				b, err := os.ReadFile(envFile)
				if err != nil {
					return fmt.Errorf("reading --from-env-file: %w", err)
				}
				env, err := parseEnvFile(b)
				if err != nil {
					return usageErrorf("--from-env-file %s: %v", envFile, err)
				}
				for _, k := range slices.Sorted(maps.Keys(env)) {
					if err := add(k, env[k], "--from-env-file"); err != nil {
						return err
					}
				}
			}
			if stdin {
				b, err := readInput(cmd, "-", "fields", "pipe a JSON object of fields")
				if err != nil {
					return err
				}
				var m map[string]string
				if err := jsonUnmarshalStrict(b, &m); err != nil {
					return usageErrorf("standard input: want a JSON object of string fields, like {\"password\": \"...\"}: %v", err)
				}
				for _, k := range slices.Sorted(maps.Keys(m)) {
					if err := add(k, m[k], "standard input"); err != nil {
						return err
					}
				}
			}
			req := client.SecretPutRequest{Fields: fields, Key: key}
			if cmd.Flags().Changed("cas") {
				if cas < 0 || cas > 1<<32-1 {
					return usageErrorf("--cas %d: want a version number, 0 to create only", cas)
				}
				n := uint32(cas)
				req.CAS = &n
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			v, err := c.SecretPut(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, v)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Wrote version %d of %s\n", v.Version, args[0])
			return err
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "Coffer key of this and later versions (key id or alias/NAME)")
	cmd.Flags().Int64Var(&cas, "cas", 0, "write only if the current version is N (0: only create)")
	cmd.Flags().StringArray("from-literal", nil, "FIELD=VALUE, repeatable (on the command line: tests and non-secret fields only)")
	cmd.Flags().StringArray("from-file", nil, "FIELD=PATH: the field's value is the file's content, repeatable")
	cmd.Flags().StringVar(&envFile, "from-env-file", "", "file of KEY=VALUE lines, one field each (# comments, blank lines skipped)")
	markSecretFlag(cmd.Flags(), "from-literal", "use --from-file, --from-env-file or - (standard input) for secret values")
	return cmd
}

// boundArg shortens what a user typed before it is quoted in an error.
func boundArg(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// jsonUnmarshalStrict decodes exactly one JSON value.
func jsonUnmarshalStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON object")
	}
	return nil
}

// parseEnvFile reads KEY=VALUE lines; blank lines and # comments are
// skipped, "export " is allowed, and a value in matching single or double
// quotes loses them.
func parseEnvFile(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: want KEY=VALUE", n)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("line %d: %s is given twice", n, k)
		}
		out[k] = v
	}
	return out, sc.Err()
}

func newSecretGetCmd() *cobra.Command {
	var version int64
	var stage, fieldName string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Read a version of a secret (the current one by default)",
		Long: `Read a version of the secret NAME: the current one, --version N, or
--stage previous|pending. -o table (default) lists the fields, -o json and
-o yaml print the whole version, -o env prints FIELD=VALUE lines (shell
quoted), and -o raw --field k prints one field's value as it is.`,
		Example: `  coffer secret get team-a/web/db
  coffer secret get team-a/web/db -o raw --field password
  coffer secret get team-a/web/db --stage previous -o json`,
		Args:        exactArgs(1, "NAME"),
		Annotations: map[string]string{annotSecretFormats: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := outputFormat(cmd)
			if out == outputRaw && fieldName == "" {
				return usageErrorf("-o raw prints one field: name it with --field")
			}
			if fieldName != "" && out != outputRaw {
				return usageErrorf("--field goes with -o raw")
			}
			if version < 0 || version > 1<<32-1 {
				return usageErrorf("--version %d: want a version number", version)
			}
			if version != 0 && stage != "" {
				return usageErrorf("give --version or --stage, not both")
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			v, err := c.SecretGet(cmd.Context(), args[0], client.SecretGetOptions{Version: uint32(version), Stage: stage})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch out {
			case outputJSON, outputYAML:
				return printData(cmd, v)
			case outputRaw:
				val, ok := v.Fields[fieldName]
				if !ok {
					return fmt.Errorf("version %d of %s has no field %q (it has %s)", v.Version, args[0], fieldName, strings.Join(slices.Sorted(maps.Keys(v.Fields)), ", "))
				}
				_, err = io.WriteString(w, val)
				return err
			case outputEnv:
				// Variable names as coffer exec derives them: a field such
				// as db-password printed as is would make a shell's eval
				// run "db-password=VALUE" as a command and print the
				// value in its error.
				vars := make(map[string]string, len(v.Fields))
				for _, k := range slices.Sorted(maps.Keys(v.Fields)) {
					n := deliveryEnvName(k)
					if prev, dup := vars[n]; dup {
						return fmt.Errorf("fields %q and %q of %s both become the variable %s: use -o json or -o raw --field", prev, k, args[0], n)
					}
					vars[n] = k
				}
				for _, n := range slices.Sorted(maps.Keys(vars)) {
					fmt.Fprintf(w, "%s=%s\n", n, shellQuote(v.Fields[vars[n]]))
				}
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s version %d (%s)\n", args[0], v.Version, orDash(strings.Join(v.Stages, ", ")))
			rows := make([][]string, 0, len(v.Fields))
			for _, k := range slices.Sorted(maps.Keys(v.Fields)) {
				rows = append(rows, []string{k, v.Fields[k]})
			}
			return printTable(w, []string{"FIELD", "VALUE"}, rows)
		},
	}
	cmd.Flags().Int64Var(&version, "version", 0, "read version N")
	cmd.Flags().StringVar(&stage, "stage", "", "read the version holding this stage: current, previous or pending")
	cmd.Flags().StringVar(&fieldName, "field", "", "with -o raw: the field to print")
	return cmd
}

func newSecretListCmd() *cobra.Command {
	var prefix string
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List secrets by name prefix",
		Long: `List the secrets whose names start with --prefix, every page (or the
first --limit). Listing needs secret:List on secret/PREFIX.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageErrorf("--limit %d: want a positive number", limit)
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			all := client.SecretList{Secrets: []client.SecretListEntry{}}
			after := ""
			for {
				page := 1000
				if limit > 0 {
					page = min(1000, limit-len(all.Secrets))
				}
				l, err := c.SecretList(cmd.Context(), client.SecretListOptions{Prefix: prefix, After: after, Limit: page})
				if err != nil {
					return err
				}
				all.Secrets = append(all.Secrets, l.Secrets...)
				if l.Next == "" || (limit > 0 && len(all.Secrets) >= limit) {
					all.Next = l.Next
					break
				}
				after = l.Next
			}
			if wantJSON(cmd) {
				return printData(cmd, all)
			}
			if len(all.Secrets) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No secrets.")
				return nil
			}
			rows := make([][]string, 0, len(all.Secrets))
			for _, s := range all.Secrets {
				rows = append(rows, []string{s.Name, strconv.FormatUint(uint64(s.CurrentVersion), 10), fmtTime(s.UpdatedAt), fmtTimePtr(s.DeletedAt)})
			}
			return printTable(cmd.OutOrStdout(), []string{"NAME", "VERSION", "UPDATED", "DELETED"}, rows)
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names starting with this")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (default: all)")
	return cmd
}

func newSecretHistoryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history NAME",
		Short: "List a secret's versions (no values)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			md, err := c.SecretMetadata(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, md.Versions)
			}
			return printVersions(cmd.OutOrStdout(), md.Versions)
		},
	}
}

func printVersions(w io.Writer, vs []client.SecretVersion) error {
	rows := make([][]string, 0, len(vs))
	for _, v := range vs {
		rows = append(rows, []string{strconv.FormatUint(uint64(v.Version), 10), orDash(strings.Join(v.Stages, ",")), fmtTime(v.CreatedAt),
			fmtTimePtr(v.DestroyedAt)})
	}
	return printTable(w, []string{"VERSION", "STAGES", "CREATED", "DESTROYED"}, rows)
}

func printSecretMetadata(cmd *cobra.Command, md *client.SecretMetadata) error {
	if wantJSON(cmd) {
		return printData(cmd, md)
	}
	f := []field{
		{"Name", md.Name},
		{"Key", md.Key},
		{"Current version", strconv.FormatUint(uint64(md.CurrentVersion), 10)},
		{"Max versions", strconv.Itoa(md.MaxVersions)},
		{"Custom", orDash(fmtMap(md.Custom))},
		{"Created", fmtTime(md.CreatedAt)},
		{"Updated", fmtTime(md.UpdatedAt)},
	}
	if md.DeletedAt != nil {
		f = append(f, field{"Deleted", fmtTimePtr(md.DeletedAt)}, field{"Purged after", fmtTimePtr(md.PurgeAt)})
	}
	if md.PendingVersion != 0 {
		f = append(f, field{"Pending version", strconv.FormatUint(uint64(md.PendingVersion), 10)})
	}
	if r := md.Rotation; r != nil {
		f = append(f, field{"Rotation", "every " + r.Every + " with " + r.With}, field{"Rotation state", r.State},
			field{"Next rotation", fmtTime(r.NextAt)}, field{"Last rotated", fmtTimePtr(r.LastRotated)})
		if r.State == "failed" {
			f = append(f, field{"Failed attempts", strconv.Itoa(r.Attempts)}, field{"Last error", r.LastError})
		}
		if r.Unsigned {
			f = append(f, field{"Webhook calls", "unsigned (set the rotation again to make a signing key)"})
		}
		if r.SigningKey != "" {
			f = append(f, field{"Signing key", r.SigningKey + " (shown once: give it to the webhook)"})
		}
	}
	return printFields(cmd.OutOrStdout(), f)
}

func newSecretDeleteCmd() *cobra.Command {
	var window string
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret, recoverable with undelete within a window",
		Long: `Delete the secret NAME: it can no longer be read or written, and it
is erased for good after --window (1d to 30d, default 7d) unless undeleted
first. Asks first on a terminal; --yes in scripts.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if window != "" {
				if _, err := parsePeriod(window); err != nil {
					return usageErrorf("--window %q: want a number of days from 1d to 30d, like 7d", window)
				}
			}
			shown := window
			if shown == "" {
				shown = "7d"
			}
			if err := confirm(cmd, fmt.Sprintf("delete the secret %s (it can be undeleted for %s, then it is erased)", args[0], shown)); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			md, err := c.SecretDelete(cmd.Context(), args[0], window)
			if err != nil {
				return err
			}
			return printSecretMetadata(cmd, md)
		},
	}
	cmd.Flags().StringVar(&window, "window", "", "recovery window, 1d to 30d (default 7d)")
	addYesFlag(cmd)
	return cmd
}

func newSecretUndeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "undelete NAME",
		Short: "Restore a deleted secret within its recovery window",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			md, err := c.SecretUndelete(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printSecretMetadata(cmd, md)
		},
	}
}

func newSecretDestroyCmd() *cobra.Command {
	var versions []string
	cmd := &cobra.Command{
		Use:   "destroy NAME --version N [--version M ...]",
		Short: "Erase versions of a secret for good",
		Long: `Erase the data of versions of the secret NAME. Irreversible: their
values are gone; the history keeps them, marked destroyed. Asks first on a
terminal; --yes in scripts.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(versions) == 0 {
				return usageErrorf("name the versions to destroy with --version N")
			}
			vs := make([]uint32, 0, len(versions))
			strs := make([]string, 0, len(versions))
			for _, s := range versions {
				v, err := strconv.ParseUint(s, 10, 32)
				if err != nil || v == 0 {
					return usageErrorf("--version %q: want a version number", boundArg(s))
				}
				vs = append(vs, uint32(v))
				strs = append(strs, strconv.FormatUint(v, 10))
			}
			if err := confirm(cmd, fmt.Sprintf("erase version %s of the secret %s for good", strings.Join(strs, ", "), args[0])); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			md, err := c.SecretDestroy(cmd.Context(), args[0], vs...)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, md)
			}
			return printVersions(cmd.OutOrStdout(), md.Versions)
		},
	}
	cmd.Flags().StringArrayVar(&versions, "version", nil, "version to destroy (repeatable)")
	addYesFlag(cmd)
	return cmd
}

func newSecretMetadataCmd() *cobra.Command {
	var maxVersions int
	var unset []string
	cmd := &cobra.Command{
		Use:   "metadata NAME",
		Short: "Show or change a secret's metadata (max versions, custom metadata)",
		Long: `Show the metadata of the secret NAME, or change it: --max-versions N
(1 to 100; lowering it destroys the oldest versions beyond N that hold no
stage), --set k=v and --unset k (custom metadata).`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, _ := cmd.Flags().GetStringToString("set")
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var md *client.SecretMetadata
			if cmd.Flags().Changed("max-versions") || len(set) > 0 || len(unset) > 0 {
				u := client.SecretMetadataUpdate{Set: set, Unset: unset}
				if cmd.Flags().Changed("max-versions") {
					u.MaxVersions = &maxVersions
				}
				md, err = c.SecretUpdateMetadata(cmd.Context(), args[0], u)
			} else {
				md, err = c.SecretMetadata(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			return printSecretMetadata(cmd, md)
		},
	}
	cmd.Flags().IntVar(&maxVersions, "max-versions", 0, "versions to keep, 1 to 100")
	cmd.Flags().StringToString("set", nil, "custom metadata KEY=VALUE (repeatable)")
	cmd.Flags().StringSliceVar(&unset, "unset", nil, "custom metadata key to remove (repeatable)")
	return cmd
}

func newSecretRotationCmd() *cobra.Command {
	cmd := groupCmd("rotation", "Configure or disable a secret's rotation")
	cmd.Long = `Configure the rotation of a secret (docs/secrets.md, "Rotation"):
every --every (at least 1h; 30d, 12h) a pending version is made with a
new value, applied, and promoted to current. Needs secret:Rotate.`
	cmd.AddCommand(newSecretRotationSetCmd(), newSecretRotationDisableCmd())
	return cmd
}

func newSecretRotationSetCmd() *cobra.Command {
	var every, with string
	var roll bool
	cmd := &cobra.Command{
		Use:   "set NAME --every PERIOD --with GENERATOR",
		Short: "Rotate a secret on a schedule",
		Long: `Rotate the secret NAME every --every (at least 1h). --with is either
random:length=N,charset=alnum|hex|base64|ascii-printable|CHARS,field=NAME
(a new random value in that field, the other fields copied; defaults
length=32, charset=alnum, field=password) or webhook:URL (https, or http to
a loopback address), or webhook:length=N,charset=...,field=NAME,url=URL
(the random: options for the new value, url= last): Coffer makes the
pending version with a random value (default: a password field) and
POSTs {secret, old_version, new_version, step} to the URL, step apply
then test; it must answer {"status":"ok"}. Each call is signed (header
Coffer-Signature, docs/formats.md): the first webhook rotation set prints
the signing key, once; setting the rotation again keeps it unless
--roll-signing-key asks for a new one (printed once too).`,
		Example: `  coffer secret rotation set team-a/web/db --every 30d --with random:length=32,charset=alnum
  coffer secret rotation set team-a/web/db --every 7d --with webhook:https://rotator.internal/db
  coffer secret rotation set team-a/web/api --every 7d --with webhook:length=40,charset=hex,field=token,url=https://rotator.internal/api`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if every == "" || with == "" {
				return usageErrorf("give the rotation period with --every and the generator with --with")
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			md, err := c.SecretSetRotation(cmd.Context(), args[0], client.SecretRotationRequest{Every: every, With: with, RollSigningKey: roll})
			if err != nil {
				return err
			}
			return printSecretMetadata(cmd, md)
		},
	}
	cmd.Flags().StringVar(&every, "every", "", "rotation period, at least 1h (30d, 12h)")
	cmd.Flags().StringVar(&with, "with", "", "random:length=N,charset=...,field=NAME, webhook:URL or webhook:length=N,...,url=URL")
	cmd.Flags().BoolVar(&roll, "roll-signing-key", false, "replace the webhook's signing key (the new one is printed once)")
	return cmd
}

func newSecretRotationDisableCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "disable NAME",
		Short: "Stop rotating a secret (rolls back a pending version)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			md, err := c.SecretDisableRotation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printSecretMetadata(cmd, md)
		},
	}
}

func newSecretRotateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate NAME",
		Short: "Rotate a secret now",
		Long: `Rotate the secret NAME now with its rotation configuration: make a
pending version, apply and test it (webhook), promote it to current. A
failed step keeps current, and the next try resumes the same pending
version.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			r, err := c.SecretRotate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, r)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Rotated %s: version %d is current (previous %d)\n", r.Name, r.CurrentVersion, r.PreviousVersion)
			return err
		},
	}
}
