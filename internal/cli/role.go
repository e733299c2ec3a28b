package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/iam"
)

// newRoleCmd builds `coffer role`.
func newRoleCmd() *cobra.Command {
	cmd := groupCmd("role", "Create and manage roles: policies that callers assume for a while")
	cmd.Long = `Create and manage roles. A role names the stored policies its temporary
tokens carry, how long they live (ttl, max_ttl), the networks they may be
used from (bound_cidrs), and who may assume it: principals such as access
keys (trust_principals, with 'coffer auth assume-role'), Kubernetes service
accounts (kubernetes, with 'coffer auth kubernetes') and client
certificates (certificates, with 'coffer auth cert').

A role file is YAML or JSON with those fields:

  description: CI deploys
  policies: [deploy]
  ttl: 15m
  max_ttl: 1h
  trust_principals: ["access-key:cfak_*"]
  kubernetes:
    - {cluster: prod, namespace: ci, service_account: deployer, audience: coffer}
  certificates:
    - {common_name: "ci-*", dns_name: "*.ci.example.com"}
  bound_cidrs: [10.0.0.0/8]`
	cmd.AddCommand(newRoleCreateCmd(), newRoleUpdateCmd(), newRoleGetCmd(), newRoleListCmd(), newRoleDeleteCmd())
	return cmd
}

// newRoleCreateCmd builds `coffer role create`.
func newRoleCreateCmd() *cobra.Command {
	var (
		file string
		r    client.Role
	)
	cmd := &cobra.Command{
		Use:   "create NAME (-f FILE | --policy P ...)",
		Short: "Create a role from a file, or from flags",
		Long: `Create a role, described by a YAML or JSON file (-f, - for stdin; see
'coffer role --help') or, for the common case, by flags. The flags and -f
exclude each other.`,
		Example: `  coffer role create deploy -f deploy-role.yaml
  coffer role create deploy --policy deploy --ttl 15m --max-ttl 1h \
    --trust 'access-key:cfak_*' --cidr 10.0.0.0/8
  coffer role create payments --policy payments-kms \
    --k8s cluster=prod,namespace=payments,service-account=api`,
		Args: exactArgs(1, "NAME"),
	}
	k8s := &k8sTrustFlag{}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "role `FILE` (YAML or JSON; - for stdin)")
	f.StringArrayVar(&r.Policies, "policy", nil, "stored policy `NAME` the role's tokens carry (repeatable)")
	f.StringVar(&r.TTL, "ttl", "", "default lifetime of the role's tokens, like 15m (default 1h)")
	f.StringVar(&r.MaxTTL, "max-ttl", "", "longest lifetime a token may ask for or renew to (default the ttl)")
	f.StringArrayVar(&r.TrustPrincipals, "trust", nil, "`PATTERN` of principals that may assume the role, like access-key:cfak_* (repeatable)")
	f.Var(k8s, "k8s", "Kubernetes service accounts that may assume the role, with an optional ,audience=A; globs allowed (repeatable)")
	f.StringArrayVar(&r.BoundCIDRs, "cidr", nil, "network (`CIDR`) the role's tokens may be used from, like 10.0.0.0/8 (repeatable)")
	f.StringVar(&r.Description, "description", "", "description of the role")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if file != "" {
			if changed := changedFlags(cmd, "policy", "ttl", "max-ttl", "trust", "k8s", "cidr", "description"); len(changed) > 0 {
				return usageErrorf("give the role either with -f or with flags, not both (--%s given with -f)", changed[0])
			}
			var err error
			if r, err = readRoleFile(cmd, file, args[0]); err != nil {
				return err
			}
		} else {
			if len(r.Policies) == 0 {
				return usageErrorf("give the role with -f FILE, or at least one --policy")
			}
			r.Kubernetes = k8s.list
			if err := checkRoleFlags(r); err != nil {
				return err
			}
		}
		r.Name = args[0]
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		out, err := c.CreateRole(cmd.Context(), r)
		if err != nil {
			return err
		}
		return printRole(cmd, out)
	}
	return cmd
}

// newRoleUpdateCmd builds `coffer role update`.
func newRoleUpdateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "update NAME -f FILE",
		Short: "Replace a role with the one in a file",
		Long: `Replace a role with the one described in a YAML or JSON file (-f, - for
stdin). Fields the file leaves out take their defaults. Tokens already
issued keep their lifetime but get the new policies from their next
request. 'coffer role get NAME -o json' gives a file to edit.`,
		Example: `  coffer role get deploy -o json > deploy.json
  coffer role update deploy -f deploy.json`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageErrorf("-f FILE is required")
			}
			r, err := readRoleFile(cmd, file, args[0])
			if err != nil {
				return err
			}
			r.Name = args[0]
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			out, err := c.UpdateRole(cmd.Context(), r)
			if err != nil {
				return err
			}
			return printRole(cmd, out)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "role `FILE` (YAML or JSON; - for stdin)")
	return cmd
}

// newRoleGetCmd builds `coffer role get`.
func newRoleGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Describe a role",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			r, err := c.GetRole(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printRole(cmd, r)
		},
	}
}

// newRoleListCmd builds `coffer role list`.
func newRoleListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List roles",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListRoles(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				if l == nil {
					l = []client.Role{}
				}
				return printData(cmd, client.RoleList{Roles: l})
			}
			if len(l) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No roles.")
				return nil
			}
			rows := make([][]string, 0, len(l))
			for _, r := range l {
				rows = append(rows, []string{r.Name, fmtList(r.Policies), orDash(r.TTL), orDash(r.MaxTTL),
					fmtList(roleTrust(r)), orDash(r.Description)})
			}
			return printTable(cmd.OutOrStdout(), []string{"NAME", "POLICIES", "TTL", "MAX TTL", "TRUSTS", "DESCRIPTION"}, rows)
		},
	}
}

// newRoleDeleteCmd builds `coffer role delete`.
func newRoleDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a role and revoke its tokens",
		Long: `Delete a role and revoke every token of it. It asks for confirmation on a
terminal; --yes confirms in scripts.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, "delete the role "+args[0]+" and revoke its tokens"); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			n, err := c.DeleteRole(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, client.RevokeCountResponse{Revoked: n})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Deleted role %s; revoked %d token%s\n", args[0], n, plural(n))
			return err
		},
	}
	addYesFlag(cmd)
	return cmd
}

// changedFlags returns which of the named flags were given.
func changedFlags(cmd *cobra.Command, names ...string) []string {
	var out []string
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			out = append(out, n)
		}
	}
	return out
}

// checkRoleFlags checks what the flags of role create can check before
// anything is sent; the server checks the rest.
func checkRoleFlags(r client.Role) error {
	if err := checkPeriodFlag("ttl", r.TTL); err != nil {
		return err
	}
	if err := checkPeriodFlag("max-ttl", r.MaxTTL); err != nil {
		return err
	}
	for _, t := range r.TrustPrincipals {
		kind, id, ok := strings.Cut(t, ":")
		if !ok || kind == "" || id == "" {
			return usageErrorf("invalid --trust %q: want KIND:ID like access-key:cfak_..., token:acc_... or role:NAME (globs allowed)", t)
		}
	}
	return checkCIDRs("cidr", r.BoundCIDRs)
}

// readRoleFile reads a role from a YAML or JSON file ("-" is standard
// input). Unknown fields and a name other than name are errors.
func readRoleFile(cmd *cobra.Command, path, name string) (client.Role, error) {
	doc, err := readDocument(cmd, path, "role file")
	if err != nil {
		return client.Role{}, err
	}
	if path == "-" {
		path = "standard input"
	}
	r, err := parseRole([]byte(doc))
	if err != nil {
		return client.Role{}, fmt.Errorf("%s: %v", path, err)
	}
	if r.Name != "" && r.Name != name {
		return client.Role{}, fmt.Errorf("%s names role %q, not %q; roles cannot be renamed", path, r.Name, name)
	}
	return r, nil
}

// parseRole decodes a role document. It reads YAML with yaml.v3, whose
// YAML 1.2 scalars keep values such as "no" or "on" strings (a namespace
// can be called that), then decodes the result as JSON into client.Role,
// so the field names are the API's and unknown fields are refused.
func parseRole(doc []byte) (client.Role, error) {
	var r client.Role
	var v any
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	if err := dec.Decode(&v); err != nil {
		return r, err
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return r, errors.New("holds more than one YAML document")
	}
	if _, ok := v.(map[string]any); !ok {
		return r, errors.New("a role is a mapping of fields (policies, ttl, ...)")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return r, err
	}
	jd := json.NewDecoder(bytes.NewReader(b))
	jd.DisallowUnknownFields()
	if err := jd.Decode(&r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return r, fmt.Errorf("%s: want %s, got %s", te.Field, kindName(te.Type), jsonValueName(te.Value))
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return r, fmt.Errorf("unknown field %s (fields: name, description, policies, ttl, max_ttl, trust_principals, kubernetes, certificates, bound_cidrs)", f)
		}
		return r, err
	}
	return r, nil
}

// kindName names a Go type as a role file's author knows it.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// jsonValueName names a JSON value kind (of json.UnmarshalTypeError) as
// YAML calls it.
func jsonValueName(v string) string {
	switch v {
	case "array":
		return "a list"
	case "object":
		return "a mapping"
	case "bool":
		return "true or false"
	}
	return "a " + v
}

// roleTrust summarizes who may assume a role.
func roleTrust(r client.Role) []string {
	out := append([]string(nil), r.TrustPrincipals...)
	for _, k := range r.Kubernetes {
		out = append(out, fmt.Sprintf("kubernetes:%s/%s/%s", k.Cluster, k.Namespace, k.ServiceAccount))
	}
	for _, c := range r.Certificates {
		out = append(out, "cert:"+certTrust(c))
	}
	return out
}

// certTrust formats a certificate trust entry.
func certTrust(c client.CertificateTrust) string {
	var parts []string
	if c.CommonName != "" {
		parts = append(parts, "cn="+c.CommonName)
	}
	if c.DNSName != "" {
		parts = append(parts, "dns="+c.DNSName)
	}
	return strings.Join(parts, ",")
}

// orDefault returns s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// shortDuration formats d without zero minutes and seconds: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// printRole writes a role in the chosen format.
func printRole(cmd *cobra.Command, r *client.Role) error {
	if wantJSON(cmd) {
		return printData(cmd, r)
	}
	fields := []field{
		{"Name", r.Name},
		{"Description", orDash(r.Description)},
		{"Policies", fmtList(r.Policies)},
		{"TTL", orDefault(r.TTL, shortDuration(iam.DefaultRoleTTL)+" (default)")},
		{"Max TTL", orDefault(r.MaxTTL, "the TTL (default)")},
		{"Trusted principals", fmtList(r.TrustPrincipals)},
	}
	for _, k := range r.Kubernetes {
		v := fmt.Sprintf("cluster=%s namespace=%s service-account=%s", k.Cluster, k.Namespace, k.ServiceAccount)
		if k.Audience != "" {
			v += " audience=" + k.Audience
		}
		fields = append(fields, field{"Kubernetes", v})
	}
	for _, c := range r.Certificates {
		fields = append(fields, field{"Certificate", certTrust(c)})
	}
	fields = append(fields,
		field{"Bound CIDRs", fmtList(r.BoundCIDRs)},
		field{"Created", fmtTime(r.CreatedAt)},
		field{"Updated", fmtTime(r.UpdatedAt)},
	)
	return printFields(cmd.OutOrStdout(), fields)
}

// k8sTrustFlag is the repeatable --k8s flag of role create:
// cluster=C,namespace=N,service-account=S[,audience=A]. Its parse error is
// a usage error that names the flag.
type k8sTrustFlag struct {
	list []client.KubernetesTrust
}

// String implements pflag.Value.
func (f *k8sTrustFlag) String() string {
	parts := make([]string, 0, len(f.list))
	for _, k := range f.list {
		s := "cluster=" + k.Cluster + ",namespace=" + k.Namespace + ",service-account=" + k.ServiceAccount
		if k.Audience != "" {
			s += ",audience=" + k.Audience
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// Set implements pflag.Value: it adds one service-account pattern.
func (f *k8sTrustFlag) Set(s string) error {
	var k client.KubernetesTrust
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(s, ",") {
		name, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return fmt.Errorf("%q: want NAME=VALUE (use * for any)", kv)
		}
		if seen[name] {
			return fmt.Errorf("%s given twice", name)
		}
		seen[name] = true
		switch name {
		case "cluster":
			k.Cluster = v
		case "namespace":
			k.Namespace = v
		case "service-account", "service_account":
			k.ServiceAccount = v
		case "audience":
			k.Audience = v
		default:
			return fmt.Errorf("unknown field %q: want cluster, namespace, service-account, audience", name)
		}
	}
	if k.Cluster == "" || k.Namespace == "" || k.ServiceAccount == "" {
		return errors.New("cluster, namespace and service-account are required (use * for any)")
	}
	f.list = append(f.list, k)
	return nil
}

// Type implements pflag.Value; it shows in help as the argument name.
func (f *k8sTrustFlag) Type() string { return "cluster=C,namespace=N,service-account=S" }
