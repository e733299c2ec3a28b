package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/policy"
)

// Exit codes of the policy commands beyond 0 (ok), 1 (error), 2 (usage).
const (
	exitPolicyDenied   = exitNo // simulate: the request is denied
	exitPolicyWarnings = exitNo // lint: warnings found
)

// newPolicyCmd builds `coffer policy`.
func newPolicyCmd() *cobra.Command {
	cmd := groupCmd("policy", "Store, check, lint and simulate access policies")
	cmd.Long = `Work with Coffer access policies: YAML documents of allow and deny
statements over actions, resources and conditions (encryption context,
source address, time). Deny by default; an explicit deny wins.

put, get, list and delete manage the policies stored on the server, which
roles, access keys and tokens carry by name. validate, lint and actions
work offline on policy files; simulate works offline on files, or asks the
server about a stored principal. See docs/policy.md.`
	cmd.AddCommand(
		newPolicyPutCmd(),
		newPolicyGetCmd(),
		newPolicyListCmd(),
		newPolicyDeleteCmd(),
		newPolicyValidateCmd(),
		newPolicyLintCmd(),
		newPolicySimulateCmd(),
		newPolicyActionsCmd(),
	)
	return cmd
}

// newPolicyPutCmd builds `coffer policy put`.
func newPolicyPutCmd() *cobra.Command {
	var description string
	cmd := &cobra.Command{
		Use:   "put NAME FILE",
		Short: "Store a policy on the server, or replace it",
		Long: `Store the policy document in FILE (- for standard input) under NAME, or
replace the stored one. The server validates it first and names the line
and column of every problem. Roles, access keys and tokens that carry the
policy see the new version from their next request.`,
		Example: `  coffer policy put app-encrypt app-encrypt.yaml --description "encrypt with alias/app"`,
		Args:    exactArgs(2, "NAME", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := readDocument(cmd, args[1], "policy document")
			if err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			p, err := c.PutPolicy(cmd.Context(), args[0], client.PutPolicyRequest{Description: description, Document: doc})
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, p)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Stored policy %s\n", p.Name)
			return err
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "description of the policy")
	return cmd
}

// newPolicyGetCmd builds `coffer policy get`.
func newPolicyGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Print a stored policy's document",
		Long: `Print the document of a stored policy, as it was put, so that it can be
edited and put back; what carries the policy goes to standard error. -o
json prints the whole policy, with attached_to.`,
		Example: `  coffer policy get app-encrypt > app-encrypt.yaml`,
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			p, err := c.GetPolicy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, p)
			}
			doc := p.Document
			if doc != "" && !strings.HasSuffix(doc, "\n") {
				doc += "\n"
			}
			if _, err := fmt.Fprint(cmd.OutOrStdout(), doc); err != nil {
				return err
			}
			if len(p.AttachedTo) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "Policy %s is attached to nothing.\n", p.Name)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "Policy %s is attached to %s.\n", p.Name, strings.Join(p.AttachedTo, ", "))
			}
			return nil
		},
	}
}

// newPolicyListCmd builds `coffer policy list`.
func newPolicyListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List stored policies",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListPolicies(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				if l == nil {
					l = []client.Policy{}
				}
				return printData(cmd, client.PolicyList{Policies: l})
			}
			if len(l) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No policies.")
				return nil
			}
			rows := make([][]string, 0, len(l))
			for _, p := range l {
				rows = append(rows, []string{p.Name, fmtTime(p.UpdatedAt), orDash(p.Description)})
			}
			return printTable(cmd.OutOrStdout(), []string{"NAME", "UPDATED", "DESCRIPTION"}, rows)
		},
	}
}

// newPolicyDeleteCmd builds `coffer policy delete`.
func newPolicyDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a stored policy that nothing carries",
		Long: `Delete a stored policy. The server refuses while a role, an access key or
a token carries it ('coffer policy get NAME' says which); detach it first.
It asks for confirmation on a terminal; --yes confirms in scripts.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, "delete the policy "+args[0]); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.DeletePolicy(cmd.Context(), args[0]); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted policy %s\n", args[0])
			}
			return nil
		},
	}
	addYesFlag(cmd)
	return cmd
}

// loadPolicies parses files; each invalid file's errors go to stderr.
func loadPolicies(cmd *cobra.Command, files []string) ([]*policy.Policy, error) {
	var out []*policy.Policy
	bad := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		p, err := policy.Parse(f, data)
		if err != nil {
			bad++
			fmt.Fprintln(cmd.ErrOrStderr(), err)
			continue
		}
		out = append(out, p)
	}
	if bad > 0 {
		return nil, &exitError{code: 1, err: fmt.Errorf("%d of %d policy files invalid", bad, len(files))}
	}
	return out, nil
}

func newPolicyValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check policy files: syntax, actions, resources, conditions",
		Long: `Parse and validate policy files as the server does when a policy is written.
Every problem is printed as FILE:LINE:COLUMN: message. Exits 1 if any file
is invalid.`,
		Example: `  coffer policy validate policies/*.yaml`,
		Args:    policyFileArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := loadPolicies(cmd, args)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				type result struct {
					File       string `json:"file"`
					Statements int    `json:"statements"`
				}
				var rs []result
				for _, p := range ps {
					rs = append(rs, result{p.Name, len(p.Statements)})
				}
				return printData(cmd, rs)
			}
			for _, p := range ps {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d statements)\n", p.Name, len(p.Statements))
			}
			return nil
		},
	}
}

func newPolicyLintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lint FILE...",
		Short: "Warn about broad grants and statements that never apply",
		Long: `Validate policy files and warn about least-privilege problems: wildcard
actions or resources, decrypt-class actions allowed without conditions,
statements shadowed by a deny or made redundant by an earlier allow, and
statements (or actions of a statement) that can never match.

Exits 0 when there is nothing to say, 3 when there are warnings, 1 when a
file is invalid.`,
		Example: `  coffer policy lint policies/*.yaml`,
		Args:    policyFileArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := loadPolicies(cmd, args)
			if err != nil {
				return err
			}
			var all []policy.Warning
			for _, p := range ps {
				all = append(all, policy.Lint(p)...)
			}
			if wantJSON(cmd) {
				ws := make([]lintWarning, 0, len(all))
				for _, w := range all {
					ws = append(ws, lintWarning{w.Code, w.Policy, w.Line, w.Statement, w.Sid, w.Message})
				}
				if err := printData(cmd, ws); err != nil {
					return err
				}
			} else {
				for _, w := range all {
					fmt.Fprintln(cmd.OutOrStdout(), w)
				}
			}
			if len(all) > 0 {
				return &exitError{code: exitPolicyWarnings}
			}
			if !wantJSON(cmd) {
				fmt.Fprintf(cmd.OutOrStdout(), "%d policies, no warnings\n", len(ps))
			}
			return nil
		},
	}
}

func newPolicySimulateCmd() *cobra.Command {
	var (
		files, keyFiles, aliases []string
		principal                string
		action, resource         string
		sourceIP, at             string
	)
	cmd := &cobra.Command{
		Use:   "simulate [--policy FILE...] --principal KIND:ID[,k=v...] --action A [--resource R]",
		Short: "Decide a request against policy files or the server's policies, naming the deciding statement",
		Long: `Evaluate one request against identity policies (--policy) and, optionally,
the key policy of the key it acts on (--key-policy), offline, and print
allow or deny with the statement that decided (FILE:LINE).

Without --policy files, ask the server instead: it decides the request for
a stored principal (role:NAME, access-key:ID or token:ACCESSOR) with the
policies that principal carries and the key's stored key policy, and
names the deciding statement (POLICY:LINE). Nothing is performed. Only the
namespace and service_account fields of --principal apply there; -o json
prints the server's answer.

--principal is KIND:ID with KIND role, access-key, token or root, then
optional comma-separated fields: role=R, namespace=NS, service_account=SA,
and any other NAME=VALUE as an attribute (principal.attr.NAME). For KIND
role, the role defaults to ID.

Exits 0 when allowed, 3 when denied.`,
		Example: `  coffer policy simulate --policy app.yaml \
    --principal role:app,namespace=team-a,service_account=web \
    --action kms:Decrypt --resource alias/app-web --context namespace=team-a
  coffer policy simulate --principal role:app --action kms:Encrypt --resource alias/app`,
		Args: cobra.NoArgs,
	}
	ctx := addKVFlag(cmd, "context", "encryption context of the request")
	f := cmd.Flags()
	f.StringArrayVar(&files, "policy", nil, "identity policy file (repeatable)")
	f.StringArrayVar(&keyFiles, "key-policy", nil, "key policy file of the key acted on (repeatable)")
	f.StringVar(&principal, "principal", "", "the caller: KIND:ID[,role=R,namespace=NS,service_account=SA,NAME=VALUE...]")
	f.StringVar(&action, "action", "", "action, e.g. kms:Decrypt")
	f.StringVar(&resource, "resource", "", "resource: key id, alias/NAME, secret/PATH, ... (empty for actions on none)")
	f.StringArrayVar(&aliases, "alias", nil, "another name of the resource, e.g. the key's alias (repeatable)")
	f.StringVar(&sourceIP, "source-ip", "", "caller's address")
	f.StringVar(&at, "time", "", "time of the request, RFC 3339 (default: now)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if principal == "" || action == "" {
			return usageErrorf("--principal and --action are required")
		}
		p, err := parsePrincipal(principal)
		if err != nil {
			return usageErrorf("invalid --principal: %v", err)
		}
		if _, ok := policy.LookupAction(action); !ok {
			return usageErrorf("unknown --action %q; coffer policy actions lists them", action)
		}
		req := policy.Request{Principal: p, Action: action, Resource: resource, Aliases: aliases, Context: ctx.Map(), Time: time.Now()}
		if sourceIP != "" {
			if req.SourceIP, err = netip.ParseAddr(sourceIP); err != nil {
				return usageErrorf("invalid --source-ip %q", sourceIP)
			}
		}
		if at != "" {
			if req.Time, err = time.Parse(time.RFC3339, at); err != nil {
				return usageErrorf("invalid --time %q: want RFC 3339 like 2026-01-31T18:00:00Z", at)
			}
		}
		if len(files) == 0 {
			return simulateOnServer(cmd, p, req, keyFiles, sourceIP, at)
		}
		ids, err := loadPolicies(cmd, files)
		if err != nil {
			return err
		}
		var keySet *policy.Set
		if len(keyFiles) > 0 {
			kps, err := loadPolicies(cmd, keyFiles)
			if err != nil {
				return err
			}
			keySet = policy.NewSet(kps...)
		}
		d := policy.Authorize(policy.NewSet(ids...), keySet, req)
		if err := printPolicyDecision(cmd, d); err != nil {
			return err
		}
		if !d.Allowed {
			return &exitError{code: exitPolicyDenied}
		}
		return nil
	}
	return cmd
}

// simulateOnServer asks the server to decide req for the stored
// principal p (policy simulate without --policy files). It prints the
// decision as the offline mode does and exits 3 on deny.
func simulateOnServer(cmd *cobra.Command, p policy.Principal, req policy.Request, keyFiles []string, sourceIP, at string) error {
	switch {
	case len(keyFiles) > 0:
		return usageErrorf("--key-policy needs --policy files; without them the server applies the key's stored key policy")
	case len(req.Aliases) > 0:
		return usageErrorf("--alias needs --policy files; without them the server knows the key's names")
	case p.Kind == "root":
		return usageErrorf("the root token may do everything; simulate a role:NAME, access-key:ID or token:ACCESSOR (or give --policy files)")
	case len(p.Attributes) > 0 || (p.Kind == "role" && p.Role != p.ID) || (p.Kind != "role" && p.Role != ""):
		return usageErrorf("the server takes only the namespace= and service_account= fields of --principal; give --policy files to simulate other attributes")
	}
	c, err := newClient(cmd)
	if err != nil {
		return err
	}
	resp, err := c.Simulate(cmd.Context(), client.SimulateRequest{
		Principal:      p.Kind + ":" + p.ID,
		Action:         req.Action,
		Resource:       req.Resource,
		Context:        req.Context,
		SourceIP:       sourceIP,
		Time:           at,
		Namespace:      p.Namespace,
		ServiceAccount: p.ServiceAccount,
	})
	if err != nil {
		return err
	}
	if wantJSON(cmd) {
		out := simulateResult{Allowed: resp.Allowed, Decision: decisionWord(resp.Allowed), Reason: resp.Reason,
			Summary: resp.Decision, Statement: parseStatementRef(resp.Statement, resp.Allowed)}
		err = printData(cmd, out)
	} else {
		_, err = fmt.Fprintln(cmd.OutOrStdout(), resp.Decision)
	}
	if err != nil {
		return err
	}
	if !resp.Allowed {
		return &exitError{code: exitPolicyDenied}
	}
	return nil
}

// simulateResult is the JSON of policy simulate, the same offline and from
// the server: allowed, decision (allow or deny), reason, the one-line
// summary, and the deciding statement(s).
type simulateResult struct {
	Allowed      bool          `json:"allowed"`
	Decision     string        `json:"decision"`
	Reason       string        `json:"reason"`
	Summary      string        `json:"summary"`
	Statement    *statementRef `json:"statement,omitempty"`
	KeyStatement *statementRef `json:"key_statement,omitempty"`
}

// statementRef names a statement: its policy (a file offline, a stored
// policy's name on the server), line, 1-based index, sid and effect.
type statementRef struct {
	Policy    string `json:"policy"`
	Line      int    `json:"line"`
	Statement int    `json:"statement"`
	Sid       string `json:"sid,omitempty"`
	Effect    string `json:"effect"`
}

func decisionWord(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

func toStatementRef(r *policy.StatementRef) *statementRef {
	if r == nil {
		return nil
	}
	return &statementRef{r.Policy, r.Line, r.Index + 1, r.Sid, r.Effect.String()}
}

// statementRefRe parses policy.StatementRef.String: "POLICY:LINE
// statement N (SID)".
var statementRefRe = regexp.MustCompile(`^(.+):(\d+) statement (\d+)(?: \((.*)\))?$`)

// parseStatementRef turns the server's statement string back into a
// statementRef; the statement that decides an allow allows, a deny denies.
func parseStatementRef(s string, allowed bool) *statementRef {
	m := statementRefRe.FindStringSubmatch(s)
	if m == nil {
		return nil
	}
	line, _ := strconv.Atoi(m[2])
	n, _ := strconv.Atoi(m[3])
	return &statementRef{Policy: m[1], Line: line, Statement: n, Sid: m[4], Effect: decisionWord(allowed)}
}

func printPolicyDecision(cmd *cobra.Command, d policy.Decision) error {
	if wantJSON(cmd) {
		return printData(cmd, simulateResult{Allowed: d.Allowed, Decision: decisionWord(d.Allowed), Reason: d.Reason,
			Summary: d.String(), Statement: toStatementRef(d.Statement), KeyStatement: toStatementRef(d.KeyStatement)})
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), d)
	return err
}

// lintWarning is a policy.Warning with the JSON field names of the rest of
// the CLI (snake_case).
type lintWarning struct {
	Code      string `json:"code"`
	Policy    string `json:"policy"`
	Line      int    `json:"line"`
	Statement int    `json:"statement"`
	Sid       string `json:"sid,omitempty"`
	Message   string `json:"message"`
}

// parsePrincipal parses KIND:ID[,k=v...].
func parsePrincipal(s string) (policy.Principal, error) {
	head, rest, _ := strings.Cut(s, ",")
	kind, id, ok := strings.Cut(head, ":")
	if !ok || id == "" {
		return policy.Principal{}, errors.New("want KIND:ID")
	}
	switch kind {
	case "role", "access-key", "token", "root":
	default:
		return policy.Principal{}, fmt.Errorf("unknown kind %q: want role, access-key, token or root", kind)
	}
	p := policy.Principal{Kind: kind, ID: id}
	if kind == "role" {
		p.Role = id
	}
	for rest != "" {
		var kv string
		kv, rest, _ = strings.Cut(rest, ",")
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return policy.Principal{}, fmt.Errorf("field %q: want NAME=VALUE", kv)
		}
		switch k {
		case "role":
			p.Role = v
		case "namespace":
			p.Namespace = v
		case "service_account":
			p.ServiceAccount = v
		default:
			if p.Attributes == nil {
				p.Attributes = map[string]string{}
			}
			p.Attributes[strings.TrimPrefix(k, "attr.")] = v
		}
	}
	return p, nil
}

func newPolicyActionsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "actions",
		Short: "List the actions a policy may name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			acts := policy.Actions()
			if wantJSON(cmd) {
				type action struct {
					Name     string `json:"name"`
					Resource string `json:"resource,omitempty"`
					Context  bool   `json:"context"`
					Reads    bool   `json:"reads"`
				}
				out := make([]action, 0, len(acts))
				for _, a := range acts {
					out = append(out, action{a.Name, string(a.Resource), a.Context, a.Reads})
				}
				return printData(cmd, out)
			}
			rows := make([][]string, 0, len(acts))
			for _, a := range acts {
				ctx := ""
				if a.Context {
					ctx = "yes"
				}
				rows = append(rows, []string{a.Name, orDash(string(a.Resource)), orDash(ctx)})
			}
			return printTable(cmd.OutOrStdout(), []string{"ACTION", "RESOURCE", "CONTEXT"}, rows)
		},
	}
}

// policyFileArgs requires at least one FILE argument.
func policyFileArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usageErrorf("%s takes at least one argument (FILE...)", cmd.CommandPath())
	}
	return nil
}
