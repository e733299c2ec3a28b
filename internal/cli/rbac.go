package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/internal/rbac"
)

// newRBACCmd builds `coffer rbac`.
func newRBACCmd() *cobra.Command {
	cmd := groupCmd("rbac", "Audit who can read Kubernetes Secrets")
	cmd.Long = `Least-privilege auditor for Kubernetes RBAC: who can read or change Secrets,
directly or by an indirect path (creating pods, exec, tokens, impersonation,
escalation, ...), with the binding -> role -> rule chain of every grant.

Input is manifests (-f FILE|DIR|-, repeatable: multi-document YAML or JSON,
List kinds, kubectl get -o yaml output, rendered Helm charts) or, without
-f, a live cluster read with list calls only (--kubeconfig, --context).
Evaluation follows the upstream RBAC authorizer exactly. See docs/rbac.md.`
	cmd.AddCommand(newRBACAuditCmd(), newRBACWhoCanCmd(), newRBACCanCmd())
	return cmd
}

// rbacSource are the flags that say where the RBAC objects come from.
type rbacSource struct {
	files       []string
	kubeconfig  string
	kubeContext string
}

func (s *rbacSource) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVarP(&s.files, "filename", "f", nil, "manifest file, directory (.yaml, .yml, .json) or - for stdin; repeatable")
	f.StringVar(&s.kubeconfig, "kubeconfig", "", "read a live cluster with this kubeconfig (default without -f: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&s.kubeContext, "context", "", "kubeconfig context (default: the current one)")
}

// engine loads the snapshot and resolves it.
func (s *rbacSource) engine(cmd *cobra.Command) (*rbac.Engine, []string, error) {
	snap, notes, err := s.load(cmd)
	if err != nil {
		return nil, nil, err
	}
	return rbac.NewEngine(snap), notes, nil
}

func (s *rbacSource) load(cmd *cobra.Command) (*rbac.Snapshot, []string, error) {
	if len(s.files) > 0 {
		if s.kubeconfig != "" || s.kubeContext != "" {
			return nil, nil, usageErrorf("-f and --kubeconfig/--context are exclusive: read manifests or a cluster")
		}
		snap, err := rbac.LoadFiles(s.files, cmd.InOrStdin())
		return snap, nil, err
	}
	cfg, err := rbac.RESTConfig(s.kubeconfig, s.kubeContext)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w (pass -f to audit manifests instead)", err)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
	defer cancel()
	return rbac.LoadLive(ctx, cfg)
}

// Exit code of `coffer rbac audit --fail-on` when a finding reaches the
// threshold, distinct from errors (1) and usage errors (2): docs/cli.md.
const exitFindings = exitNo

// Formats of `coffer rbac audit --format`.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatSARIF = "sarif"
)

func newRBACAuditCmd() *cobra.Command {
	var (
		src           rbacSource
		format        string
		failOn        string
		includeSystem bool
	)
	cmd := &cobra.Command{
		Use:   "audit [-f FILE|DIR|-]... [--kubeconfig PATH [--context NAME]]",
		Short: "Report who can read or change Secrets, and how",
		Long: `Report every subject that can read or change Secrets directly, or reach
them indirectly, with the chain that grants it, plus hygiene findings
(auto-mounted tokens nobody uses, long-lived token secrets, bindings to
service accounts or roles that do not exist).

Findings about system subjects and bootstrap bindings are counted but kept
apart; --include-system mixes them in. With --fail-on SEVERITY the command
exits with 3 when a shown finding is at least that severe.`,
		Example: `  kubectl get roles,clusterroles,rolebindings,clusterrolebindings,serviceaccounts,pods -A -o yaml > rbac.yaml
  coffer rbac audit -f rbac.yaml
  helm template ./chart | coffer rbac audit -f - --fail-on high
  coffer rbac audit --kubeconfig ~/.kube/config -o sarif > rbac.sarif`,
		Annotations: map[string]string{annotSARIF: "yes"},
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format == "" {
				format = outputFormat(cmd)
			}
			if format == outputHuman {
				format = formatTable
			}
			if !slices.Contains([]string{formatTable, formatJSON, outputYAML, formatSARIF}, format) {
				return usageErrorf("invalid --format %q: use -o table, json, yaml or sarif", format)
			}
			var threshold rbac.Severity
			if failOn != "" {
				var ok bool
				if threshold, ok = rbac.ParseSeverity(failOn); !ok {
					return usageErrorf("invalid --fail-on %q: use info, low, medium, high or critical", failOn)
				}
			}
			e, notes, err := src.engine(cmd)
			if err != nil {
				return err
			}
			rep := rbac.Audit(e, rbac.AuditOptions{IncludeSystem: includeSystem})
			rep.Notes = append(notes, rep.Notes...)
			out := cmd.OutOrStdout()
			switch format {
			case formatJSON, outputYAML:
				err = writeData(cmd, func(w io.Writer) error { return rbac.WriteJSON(w, rep) })
			case formatSARIF:
				err = rbac.WriteSARIF(out, rep, "")
			default:
				err = rbac.WriteTable(out, rep)
			}
			if err != nil {
				return err
			}
			if failOn != "" {
				if worst, ok := rep.Max(); ok && worst >= threshold {
					return &exitError{code: exitFindings, err: fmt.Errorf("findings at or above %s (worst: %s)", threshold, worst)}
				}
			}
			return nil
		},
	}
	src.add(cmd)
	f := cmd.Flags()
	// --format is the old spelling of -o.
	f.StringVar(&format, "format", "", "same as -o: table, json, yaml or sarif")
	_ = f.MarkHidden("format")
	f.StringVar(&failOn, "fail-on", "", "exit with 3 if a finding is at least this severe: info, low, medium, high, critical")
	f.BoolVar(&includeSystem, "include-system", false, "mix findings about system subjects and bootstrap bindings into the report")
	return cmd
}

// requestFlags are the flags that complete a request.
type requestFlags struct {
	namespace string
	name      string
}

func (r *requestFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&r.namespace, "namespace", "n", "", "namespace of the request (default: cluster scope)")
	f.StringVar(&r.name, "name", "", "name of the object (for grants limited by resourceNames)")
}

// parseRequest builds a request from VERB RESOURCE and the flags.
func parseRequest(verb, resource string, rf *requestFlags) (rbac.Request, error) {
	res, group, sub, err := rbac.ParseResource(resource)
	if err != nil {
		return rbac.Request{}, usageErrorf("%v", err)
	}
	if verb == "" || strings.ContainsAny(verb, " /") {
		return rbac.Request{}, usageErrorf("invalid verb %q", verb)
	}
	return rbac.Request{Verb: strings.ToLower(verb), APIGroup: group, Resource: res, Subresource: sub,
		Name: rf.name, Namespace: rf.namespace}, nil
}

// whoCanResult is the JSON form of `coffer rbac who-can`.
type whoCanResult struct {
	Request rbac.Request `json:"request"`
	Grants  []rbac.Grant `json:"grants"`
}

func newRBACWhoCanCmd() *cobra.Command {
	var (
		src           rbacSource
		rf            requestFlags
		allNamespaces bool
	)
	cmd := &cobra.Command{
		Use:   "who-can VERB RESOURCE[.GROUP][/SUBRESOURCE]",
		Short: "List the subjects that may make a request, with the chains",
		Long: `List the binding subjects (users, groups, service accounts) that may make a
request, and the binding -> role -> rule chain of each grant. Without -n the
request is cluster-wide, which only ClusterRoleBindings grant; -A adds the
RoleBindings of every namespace (who can do it anywhere).`,
		Example: `  coffer rbac who-can list secrets -A -f cluster.yaml
  coffer rbac who-can get secrets -n prod --name db-password -f cluster.yaml
  coffer rbac who-can create pods/exec -n prod --kubeconfig ~/.kube/config`,
		Args: exactArgs(2, "VERB", "RESOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := parseRequest(args[0], args[1], &rf)
			if err != nil {
				return err
			}
			if allNamespaces && rf.namespace != "" {
				return usageErrorf("-A and -n are exclusive")
			}
			e, _, err := src.engine(cmd)
			if err != nil {
				return err
			}
			grants := e.WhoCan(req, allNamespaces)
			if grants == nil {
				grants = []rbac.Grant{}
			}
			if wantJSON(cmd) {
				return printData(cmd, whoCanResult{Request: req, Grants: grants})
			}
			return printGrants(cmd.OutOrStdout(), req, grants)
		},
	}
	src.add(cmd)
	rf.add(cmd)
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "include RoleBindings of every namespace")
	return cmd
}

func printGrants(w io.Writer, req rbac.Request, grants []rbac.Grant) error {
	if len(grants) == 0 {
		_, err := fmt.Fprintf(w, "Nobody can %s.\n", req)
		return err
	}
	rows := make([][]string, 0, len(grants))
	for _, g := range grants {
		scope := "cluster"
		if g.Namespace != "" {
			scope = g.Namespace
		}
		via := g.Chain.String()
		if len(g.Chain.Rule.ResourceNames) > 0 {
			via = "[limited] " + via
		}
		rows = append(rows, []string{rbac.SubjectString(g.Subject), scope, via})
	}
	return printTable(w, []string{"SUBJECT", "SCOPE", "VIA"}, rows)
}

// canResult is the JSON form of `coffer rbac can`.
type canResult struct {
	Subject string       `json:"subject"`
	User    rbac.User    `json:"user"`
	Request rbac.Request `json:"request"`
	rbac.Decision
	Reason string `json:"reason"`
}

func newRBACCanCmd() *cobra.Command {
	var (
		src    rbacSource
		rf     requestFlags
		groups []string
	)
	cmd := &cobra.Command{
		Use:   "can SUBJECT VERB RESOURCE[.GROUP][/SUBRESOURCE]",
		Short: "Answer whether a subject may make a request, and why",
		Long: `Answer yes or no, with the reason: the chains that allow the request, or
that no rule does. Exits 0 for yes and 1 for no, like kubectl auth can-i.

SUBJECT is user:NAME (or a bare NAME; the user is in system:authenticated),
serviceaccount:NAMESPACE:NAME (its token identity, in system:serviceaccounts,
system:serviceaccounts:NAMESPACE and system:authenticated) or group:NAME
(what membership of the group alone grants). --group adds groups.`,
		Example: `  coffer rbac can serviceaccount:ci:deployer list secrets -n prod -f cluster.yaml
  coffer rbac can alice get secrets -n prod --name db-password -f cluster.yaml
  coffer rbac can group:system:authenticated create pods --kubeconfig ~/.kube/config`,
		Args: exactArgs(3, "SUBJECT", "VERB", "RESOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := rbac.ParseSubject(args[0], groups)
			if err != nil {
				return usageErrorf("%v", err)
			}
			req, err := parseRequest(args[1], args[2], &rf)
			if err != nil {
				return err
			}
			e, _, err := src.engine(cmd)
			if err != nil {
				return err
			}
			d := e.Can(u, req)
			res := canResult{Subject: args[0], User: u, Request: req, Decision: d}
			if d.Allowed {
				res.Reason = "allowed by " + d.Chains[0].String()
			} else {
				res.Reason = fmt.Sprintf("no RBAC rule lets %s %s", u.Describe(), req)
			}
			if wantJSON(cmd) {
				if err := printData(cmd, res); err != nil {
					return err
				}
			} else if err := printDecision(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			if !d.Allowed {
				return &exitError{code: exitNo}
			}
			return nil
		},
	}
	src.add(cmd)
	rf.add(cmd)
	cmd.Flags().StringArrayVar(&groups, "group", nil, "extra group of the subject; repeatable")
	return cmd
}

func printDecision(w io.Writer, res canResult) error {
	bw := &strings.Builder{}
	if res.Allowed {
		fmt.Fprintf(bw, "yes: %s may %s\n", res.User.Describe(), res.Request)
		for _, c := range res.Chains {
			fmt.Fprintf(bw, "  via %s\n", c)
		}
	} else {
		fmt.Fprintf(bw, "no: %s\n", res.Reason)
	}
	for _, m := range res.Missing {
		fmt.Fprintf(bw, "  note: missing %s\n", m)
	}
	_, err := io.WriteString(w, bw.String())
	return err
}
