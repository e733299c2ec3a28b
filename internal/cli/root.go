// Package cli implements the coffer command: the server, and the command
// line client of Coffer's REST API built on package client.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// Names of the global flags.
const (
	flagAddress    = "address"
	flagToken      = "token"
	flagCACert     = "ca-cert"
	flagSkipVerify = "tls-skip-verify"
	flagOutput     = "output"
	flagJSON       = "json"
	flagYes        = "yes"
)

// Output formats of -o/--output.
const (
	outputTable = "table"
	outputHuman = "human" // the old name of table, still accepted
	outputJSON  = "json"
	outputYAML  = "yaml"
	outputSARIF = "sarif" // only for commands annotated with annotSARIF
)

// annotSARIF marks a command that also prints -o sarif.
const annotSARIF = "coffer.sarif"

// annotNoTokenCache marks a command that runs long (bench, kms-plugin):
// it logs in afresh instead of starting from a cached role token, which
// may have only a third of its life left.
const annotNoTokenCache = "coffer.no-token-cache"

// annotLogin marks a login command that sends its own credential; its
// value is the hint shown when the login is refused.
const annotLogin = "coffer.login"

// Exit codes, the same for every command (docs/cli.md): 0 success, 1 an
// error, 2 a usage error (nothing was done), 3 the command worked and its
// answer is "no": findings (scan, rbac audit --fail-on), warnings (policy
// lint), a denied request (policy simulate, rbac can), a sealed server
// (operator status). coffer exec passes on its command's exit code.
const (
	exitCodeError = 1
	exitCodeUsage = 2
	exitNo        = 3
)

// Main runs the coffer command with the process's arguments and standard
// streams, and returns the exit code (exitCodeError, exitCodeUsage, exitNo).
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if cmd == nil {
		cmd = root
	}

	var exitErr *exitError
	if errors.As(err, &exitErr) {
		if exitErr.err != nil {
			fmt.Fprintf(stderr, "coffer: error: %v\n", exitErr.err)
		}
		return exitErr.code
	}
	var usageErr *usageError
	if errors.As(err, &usageErr) && cmd.HasAvailableSubCommands() {
		// "coffer kms encrpyt --key k": the group command fails on the
		// flag, but what is wrong is the subcommand.
		if word := unknownSubcommand(cmd, args); word != "" {
			err = subcommandArgs(cmd, []string{word})
		}
	}
	if errors.As(err, &usageErr) {
		fmt.Fprintf(stderr, "coffer: error: %v\nRun '%s --help' for usage.\n", usageErr.err, cmd.CommandPath())
		return exitCodeUsage
	}
	fmt.Fprintf(stderr, "coffer: error: %s\n", describeError(cmd, err))
	return exitCodeError
}

// newRootCmd builds the whole command tree.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "coffer",
		Short: "Coffer is a self-hosted key management service",
		Long: `Coffer is a self-hosted key management service: it keeps key encryption
keys behind a sealed barrier and encrypts, decrypts and generates data keys
with them over a REST API.

The same binary runs the server (coffer server) and is the command line
client of a running server. The client finds the server with --address or
COFFER_ADDR, authenticates with COFFER_TOKEN (or --token, which shows in ps
and the shell history; or an access key:
COFFER_ACCESS_KEY_ID and COFFER_SECRET_ACCESS_KEY; or a Kubernetes
service-account token: COFFER_ROLE and COFFER_TOKEN_FILE; COFFER_ROLE with any
of them acts in that role; see docs/identity.md), and trusts the CA
certificates in --ca-cert or COFFER_CACERT (COFFER_SKIP_VERIFY=1 skips TLS
verification for a development server with a self-signed certificate).

-o sets the output format of every command that prints a result: table
(the default), json or yaml. Destructive commands ask for confirmation on a
terminal and take --yes in scripts. Exit codes: 0 success, 1 error, 2 usage
error, 3 a "no" answer (findings, warnings, a denied request, a sealed
server). See docs/cli.md.`,
		Example: `  coffer operator init --shares 5 --threshold 3
  coffer operator unseal
  read -rs COFFER_TOKEN && export COFFER_TOKEN
  coffer key create --alias alias/app
  coffer kms encrypt --key alias/app --in secret.txt > secret.b64
  coffer kms decrypt --in secret.b64`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		Args:              subcommandArgs,
		RunE:              showHelp,
		PersistentPreRunE: validateGlobalFlags,
	}
	// A command that holds subcommands runs only to print its help or reject
	// an unknown subcommand, so its usage shows just "[command]".
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{err: err}
	})

	pf := root.PersistentFlags()
	pf.String(flagAddress, "", "server address (env COFFER_ADDR, default "+client.DefaultAddress+"); the replicas of one server separated by commas, to fail over between them")
	pf.String(flagToken, "", "authentication token (env COFFER_TOKEN; prefer the variable: arguments show in ps)")
	markSecretFlag(pf, flagToken, "set COFFER_TOKEN instead")
	pf.String(flagCACert, "", "PEM file of CA certificates to trust (env COFFER_CACERT)")
	pf.Bool(flagSkipVerify, false, "skip TLS certificate verification, for development only (env COFFER_SKIP_VERIFY=1)")
	pf.StringP(flagOutput, "o", outputTable, "output format: table, json or yaml")
	_ = root.RegisterFlagCompletionFunc(flagOutput, cobra.FixedCompletions(
		[]string{outputTable, outputJSON, outputYAML}, cobra.ShellCompDirectiveNoFileComp))
	// --json is the old spelling of -o json.
	pf.Bool(flagJSON, false, "same as -o json")
	_ = pf.MarkHidden(flagJSON)

	root.Version = currentVersion().String()
	root.SetVersionTemplate("{{.Version}}\n")
	root.InitDefaultVersionFlag()
	root.AddCommand(
		newVersionCmd(),
		newServerCmd(),
		newKMSPluginCmd(),
		newCSIProviderCmd(),
		newK8sCmd(),
		newOperatorCmd(),
		newKeyCmd(),
		newKMSCmd(),
		newTokenCmd(),
		newPolicyCmd(),
		newRoleCmd(),
		newAccessKeyCmd(),
		newAuthCmd(),
		newBenchCmd(),
		newEnvelopeEncryptCmd(),
		newEnvelopeDecryptCmd(),
		newInspectCmd(),
		newSealCmd(),
		newUnsealCmd(),
		newEditCmd(),
		newExecCmd(),
		newScanCmd(),
		newRBACCmd(),
		newAuditCmd(),
		newAlertsCmd(),
		newSecretCmd(),
	)
	// Add cobra's completion command now rather than at execution, so that
	// an unknown shell is a usage error like any unknown command.
	root.InitDefaultCompletionCmd()
	if completion, _, err := root.Find([]string{"completion"}); err == nil && completion != root {
		completion.Args = subcommandArgs
		completion.RunE = showHelp
	}
	markArgErrorsAsUsage(root)
	return root
}

// markArgErrorsAsUsage makes every positional-argument error in the tree a
// usage error (exit 2), including those of validators such as cobra.NoArgs
// used by commands defined elsewhere.
func markArgErrorsAsUsage(cmd *cobra.Command) {
	if validate := cmd.Args; validate != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			err := validate(c, args)
			var ue *usageError
			if err != nil && !errors.As(err, &ue) {
				return &usageError{err: err}
			}
			return err
		}
	}
	for _, sub := range cmd.Commands() {
		markArgErrorsAsUsage(sub)
	}
}

// validateGlobalFlags checks the flags shared by all commands.
func validateGlobalFlags(cmd *cobra.Command, _ []string) error {
	out, err := cmd.Flags().GetString(flagOutput)
	if err != nil {
		return err
	}
	switch out {
	case outputTable, outputHuman, outputJSON, outputYAML:
	case outputEnv, outputRaw:
		if cmd.Annotations[annotSecretFormats] == "" {
			return usageErrorf("invalid --output %q: only coffer secret get prints env or raw; use table, json or yaml", out)
		}
	case outputSARIF:
		if cmd.Annotations[annotSARIF] == "" {
			return usageErrorf("invalid --output %q: %s prints table, json or yaml", out, cmd.CommandPath())
		}
	default:
		msg := fmt.Sprintf("invalid --output %q: use table, json or yaml", out)
		if cmd.Annotations[annotSARIF] != "" {
			msg = fmt.Sprintf("invalid --output %q: use table, json, yaml or sarif", out)
		}
		if cmd.Flags().Lookup("out") != nil {
			msg += " (-o is the output format; name the output file with --out FILE)"
		}
		return usageErrorf("%s", msg)
	}
	if j, _ := cmd.Flags().GetBool(flagJSON); j && cmd.Flags().Changed(flagOutput) && out != outputJSON {
		return usageErrorf("--json and -o %s disagree: give one", out)
	}
	warnSecretFlags(cmd)
	return nil
}

// unknownSubcommand returns the first word of args after cmd's path that
// is not a flag (nor a flag's value), when cmd holds subcommands: the
// subcommand the user meant. "" when there is none.
func unknownSubcommand(cmd *cobra.Command, args []string) string {
	depth := 0
	for c := cmd; c.HasParent(); c = c.Parent() {
		depth++
	}
	words := 0
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			// A global flag's value is the next word unless given with =.
			name := strings.TrimLeft(a, "-")
			if f := cmd.Flags().Lookup(name); f != nil && !strings.Contains(a, "=") && f.Value.Type() != "bool" {
				i++
			} else if len(name) == 1 {
				if f := cmd.Flags().ShorthandLookup(name); f != nil && f.Value.Type() != "bool" {
					i++
				}
			}
			continue
		}
		if words == depth {
			return a
		}
		words++
	}
	return ""
}

// groupCmd returns a command that only holds subcommands.
func groupCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  subcommandArgs,
		RunE:  showHelp,
	}
}

// showHelp prints the help of a command run without a subcommand.
func showHelp(cmd *cobra.Command, _ []string) error {
	return cmd.Help()
}

// subcommandArgs rejects arguments to a command that only holds
// subcommands: they name an unknown subcommand.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return &usageError{err: errors.New(msg)}
}

// exactArgs is cobra.ExactArgs with a usage error that names the arguments.
func exactArgs(n int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		return argCountError(cmd, args, fmt.Sprintf("%d", n), names)
	}
}

// maxArgs is cobra.MaximumNArgs with a usage error.
func maxArgs(n int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) <= n {
			return nil
		}
		return argCountError(cmd, args, fmt.Sprintf("at most %d", n), names)
	}
}

// argCountError reports a wrong number of positional arguments.
func argCountError(cmd *cobra.Command, args []string, want string, names []string) error {
	what := "argument"
	if want != "1" && want != "at most 1" {
		what = "arguments"
	}
	msg := fmt.Sprintf("%s takes %s %s", cmd.CommandPath(), want, what)
	if len(names) > 0 {
		msg += " (" + strings.Join(names, " ") + ")"
	}
	return usageErrorf("%s, got %d", msg, len(args))
}

// usageError is an error in how a command was invoked; it exits with 2.
type usageError struct{ err error }

// Error returns the message of the wrapped error.
func (e *usageError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a formatted *usageError.
func usageErrorf(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// exitError makes the command exit with code, printing err if non-nil.
type exitError struct {
	code int
	err  error
}

// Error returns the message of the wrapped error, or the exit status.
func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// Unwrap returns the wrapped error, if any.
func (e *exitError) Unwrap() error { return e.err }

// settings are the connection settings resolved from flags and environment.
type settings struct {
	address    string
	token      string
	caCert     string
	skipVerify bool
}

// resolveSettings reads the global flags, falling back to the environment.
// A flag given on the command line wins over its variable.
func resolveSettings(cmd *cobra.Command) (settings, error) {
	var s settings
	flags := cmd.Flags()
	pick := func(flag, env string) string {
		if flags.Changed(flag) {
			v, _ := flags.GetString(flag)
			return v
		}
		return os.Getenv(env)
	}
	s.address = pick(flagAddress, client.EnvAddress)
	if s.address == "" {
		s.address = client.DefaultAddress
	}
	s.token = pick(flagToken, client.EnvToken)
	s.caCert = pick(flagCACert, client.EnvCACert)
	if flags.Changed(flagSkipVerify) {
		s.skipVerify, _ = flags.GetBool(flagSkipVerify)
	} else {
		skip, err := client.ParseBoolEnv(os.Getenv(client.EnvSkipVerify))
		if err != nil {
			return s, usageErrorf("%s: %v", client.EnvSkipVerify, err)
		}
		s.skipVerify = skip
	}
	return s, nil
}

// newClient returns an API client configured by the global flags and the
// environment. Commands that talk to a server (including bench) use it.
// The credential is --token or COFFER_TOKEN, else an access key, a
// Kubernetes login or a client certificate from the environment, acting in
// COFFER_ROLE when it is set (see resolveCredentials).
func newClient(cmd *cobra.Command, extra ...client.Option) (*client.Client, error) {
	s, err := resolveSettings(cmd)
	if err != nil {
		return nil, err
	}
	rc := resolveCredentials(s)
	warnCredentialConflict(cmd, rc)
	creds, err := rc.options()
	if err != nil {
		return nil, err
	}
	if cache := roleTokenCache(s, rc); cache != nil && cmd.Annotations[annotNoTokenCache] == "" {
		creds = append(creds, client.WithRoleTokenCache(cache))
	}
	opts := append(creds,
		client.WithCACertFile(s.caCert),
		client.WithInsecureSkipVerify(s.skipVerify),
		client.WithUserAgent("coffer-cli"),
	)
	opts = append(opts, extra...)
	c, err := client.New(s.address, opts...)
	if err != nil {
		return nil, usageErrorf("%s", strings.TrimPrefix(err.Error(), "client: "))
	}
	return c, nil
}

// describeError turns an error into a message with a hint where one helps.
func describeError(cmd *cobra.Command, err error) string {
	addr := client.DefaultAddress
	credSet, tokenOverKey := false, false
	if s, serr := resolveSettings(cmd); serr == nil {
		rc := resolveCredentials(s)
		addr, credSet = s.address, rc.given()
		tokenOverKey = rc.token != "" && rc.accessKeyID != ""
	}

	var fe *client.FailoverError
	if errors.As(err, &fe) && len(fe.Attempts) > 0 {
		// Several endpoints: name each and what went wrong there, unless
		// the last one answered the request itself (a 401, a 404, ...),
		// which the hints below explain.
		var last *client.APIError
		if !errors.As(fe.Attempts[len(fe.Attempts)-1].Err, &last) || last.StatusCode >= 500 {
			return strings.ReplaceAll(strings.TrimPrefix(fe.Error(), "client: "), ": client: ", ": ")
		}
		err = last
	}
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		msg := apiErr.Error()
		// A failed role login says so: "logging in as role "app": ...".
		if pre, ok := strings.CutSuffix(err.Error(), msg); ok && strings.HasPrefix(pre, "client: ") {
			msg = strings.TrimPrefix(pre, "client: ") + msg
		}
		switch {
		case (apiErr.StatusCode == http.StatusForbidden || apiErr.StatusCode == http.StatusUnauthorized) && tokenOverKey:
			msg += fmt.Sprintf("\nThe request carried the token (%s), not the access key in %s: unset %s to use the key "+
				"(it may be left from eval \"$(coffer auth assume-role ... --export)\").", client.EnvToken, client.EnvAccessKeyID, client.EnvToken)
		case apiErr.StatusCode == http.StatusUnauthorized && cmd.Annotations[annotLogin] != "":
			// A login sends its own credential: COFFER_TOKEN is not the fix.
			msg += "\n" + cmd.Annotations[annotLogin]
		case apiErr.StatusCode == http.StatusUnauthorized && !credSet:
			if !strings.Contains(msg, "COFFER_TOKEN") {
				msg += " (no token given: pass --token or set COFFER_TOKEN)"
			}
			msg += "\nOr authenticate with an access key (COFFER_ACCESS_KEY_ID and COFFER_SECRET_ACCESS_KEY), " +
				"a Kubernetes service-account token (COFFER_ROLE and COFFER_TOKEN_FILE) " +
				"or a client certificate (COFFER_CLIENT_CERT and COFFER_CLIENT_KEY)."
		case apiErr.Code == "" && strings.Contains(apiErr.Message, "HTTP request to an HTTPS server"):
			msg = fmt.Sprintf("cannot talk to the Coffer server at %s: the server speaks HTTPS; use an https:// address", addr)
		}
		return msg
	}
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}

	reach := fmt.Sprintf("cannot reach the Coffer server at %s", addr)
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var dnsErr *net.DNSError
	var opErr *net.OpError
	const tlsHint = " (pass --ca-cert or set COFFER_CACERT; COFFER_SKIP_VERIFY=1 skips verification for a development server)"
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return reach + ": connection refused (is the server running? set --address or COFFER_ADDR)"
	case errors.As(err, &certErr):
		return fmt.Sprintf("%s: %v%s", reach, certErr, tlsHint)
	case errors.As(err, &unknownAuth):
		return fmt.Sprintf("%s: %v%s", reach, unknownAuth, tlsHint)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("%s: %v%s", reach, hostErr, tlsHint)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return reach + ": the server speaks plain HTTP; use an http:// address"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("%s: %v", reach, dnsErr)
	case errors.Is(err, context.DeadlineExceeded):
		return reach + ": timed out"
	case errors.As(err, &opErr):
		return fmt.Sprintf("%s: %v", reach, opErr.Err)
	}
	// The client prefixes its errors with "client: ", at every level.
	return strings.ReplaceAll(strings.TrimPrefix(err.Error(), "client: "), ": client: ", ": ")
}
