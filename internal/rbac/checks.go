package rbac

// Severity orders findings; higher is worse.
type Severity int

// Severities, from least to most severe.
const (
	SeverityInfo Severity = iota
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = []string{"info", "low", "medium", "high", "critical"}

// String returns the lower-case name of s.
func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return "unknown"
	}
	return severityNames[s]
}

// MarshalText renders s as its name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ParseSeverity parses a severity name.
func ParseSeverity(name string) (Severity, bool) {
	for i, n := range severityNames {
		if n == name {
			return Severity(i), true
		}
	}
	return 0, false
}

// Categories of findings.
const (
	CategoryDirect   = "direct"
	CategoryIndirect = "indirect"
	CategoryHygiene  = "hygiene"
)

// action is one request shape a check looks for.
type action struct {
	verb, group, resource, subresource string
	// clusterOnly is set for cluster-scoped resources: a RoleBinding's
	// grant on them authorizes nothing.
	clusterOnly bool
}

// severities of a check by scope: a ClusterRoleBinding grant, a
// RoleBinding grant, and either when limited by resourceNames.
type severities struct{ cluster, namespace, limited Severity }

// Check describes one kind of finding.
type Check struct {
	ID       string `json:"id"`
	Category string `json:"category"`
	Title    string `json:"title"`
	// Why and Fix are one-line summaries; docs/rbac.md has the detail.
	Why string `json:"why"`
	Fix string `json:"fix"`

	sev     severities
	actions []action
	// wildcardOnly restricts a check to rules whose verbs or resources
	// contain "*".
	wildcardOnly bool
}

func acts(verbs []string, group string, resources ...string) []action {
	var out []action
	for _, res := range resources {
		r, sub := res, ""
		for i := 0; i < len(res); i++ {
			if res[i] == '/' {
				r, sub = res[:i], res[i+1:]
				break
			}
		}
		for _, v := range verbs {
			out = append(out, action{verb: v, group: group, resource: r, subresource: sub})
		}
	}
	return out
}

func clusterOnly(as []action) []action {
	for i := range as {
		as[i].clusterOnly = true
	}
	return as
}

func concat(as ...[]action) []action {
	var out []action
	for _, a := range as {
		out = append(out, a...)
	}
	return out
}

var (
	writeVerbs    = []string{"create", "update", "patch", "delete", "deletecollection"}
	allSecretVerb = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)

// Checks is the catalogue of RBAC checks, in report order. docs/rbac.md
// describes each.
var Checks = []*Check{
	{
		ID: "secrets-wildcard", Category: CategoryDirect,
		Title:        "wildcard verbs or resources include secrets",
		Why:          "a '*' grant covers every secret and every verb on it, including ones added later",
		Fix:          "list the exact verbs and resources the subject needs",
		sev:          severities{SeverityCritical, SeverityHigh, SeverityMedium},
		actions:      acts(allSecretVerb, "", "secrets"),
		wildcardOnly: true,
	},
	{
		ID: "secrets-list", Category: CategoryDirect,
		Title:   "can list or watch secrets",
		Why:     "list and watch return every secret's value in the scope",
		Fix:     "remove list/watch on secrets; grant get on named secrets (resourceNames) if needed",
		sev:     severities{SeverityCritical, SeverityHigh, SeverityMedium},
		actions: acts([]string{"list", "watch"}, "", "secrets"),
	},
	{
		ID: "secrets-get", Category: CategoryDirect,
		Title:   "can get secrets",
		Why:     "get returns a secret's value to anyone who knows or guesses its name",
		Fix:     "limit get to the secrets needed with resourceNames, or mount them instead",
		sev:     severities{SeverityHigh, SeverityMedium, SeverityLow},
		actions: acts([]string{"get"}, "", "secrets"),
	},
	{
		ID: "secrets-write", Category: CategoryDirect,
		Title:   "can create, update, patch or delete secrets",
		Why:     "update and patch return the stored value; writes replace credentials others trust",
		Fix:     "drop write verbs on secrets or limit them with resourceNames",
		sev:     severities{SeverityHigh, SeverityMedium, SeverityLow},
		actions: acts(writeVerbs, "", "secrets"),
	},
	{
		ID: "pods-create", Category: CategoryIndirect,
		Title: "can create pods or workload controllers",
		Why:   "a pod can mount any secret, and any service account token, of its namespace",
		Fix:   "let a deployment pipeline create workloads; enforce allowed secrets with admission policy",
		sev:   severities{SeverityCritical, SeverityHigh, SeverityHigh},
		actions: concat(
			acts([]string{"create"}, "", "pods"),
			acts([]string{"create", "update", "patch"}, "", "replicationcontrollers", "podtemplates"),
			acts([]string{"create", "update", "patch"}, "apps", "deployments", "replicasets", "statefulsets", "daemonsets"),
			acts([]string{"create", "update", "patch"}, "batch", "jobs", "cronjobs"),
		),
	},
	{
		ID: "pods-exec", Category: CategoryIndirect,
		Title: "can exec into, attach to or add ephemeral containers to pods",
		Why:   "a shell in a pod reads its mounted secrets, environment and service account token",
		Fix:   "remove pods/exec, pods/attach and pods/ephemeralcontainers outside break-glass roles",
		sev:   severities{SeverityHigh, SeverityMedium, SeverityMedium},
		actions: concat(
			acts([]string{"create", "get"}, "", "pods/exec", "pods/attach"),
			acts([]string{"update", "patch"}, "", "pods/ephemeralcontainers"),
		),
	},
	{
		ID: "serviceaccount-token", Category: CategoryIndirect,
		Title:   "can create service account tokens",
		Why:     "a token for a service account carries all of its permissions",
		Fix:     "remove create on serviceaccounts/token; use projected tokens in pods",
		sev:     severities{SeverityCritical, SeverityHigh, SeverityMedium},
		actions: acts([]string{"create"}, "", "serviceaccounts/token"),
	},
	{
		ID: "impersonate", Category: CategoryIndirect,
		Title: "can impersonate users, groups or service accounts",
		Why:   "impersonation acts with another identity's permissions, system:masters included",
		Fix:   "remove impersonate, or limit it with resourceNames to specific identities",
		sev:   severities{SeverityCritical, SeverityHigh, SeverityMedium},
		actions: concat(
			clusterOnly(acts([]string{"impersonate"}, "", "users", "groups")),
			acts([]string{"impersonate"}, "", "serviceaccounts"),
		),
	},
	{
		ID: "rbac-escalate-bind", Category: CategoryIndirect,
		Title:   "can escalate or bind roles",
		Why:     "escalate and bind let a subject grant permissions it does not hold, secrets included",
		Fix:     "remove escalate and bind; limit bind with resourceNames to specific roles",
		sev:     severities{SeverityCritical, SeverityHigh, SeverityMedium},
		actions: acts([]string{"escalate", "bind"}, rbacGroup, "roles", "clusterroles"),
	},
	{
		ID: "rbac-binding-write", Category: CategoryIndirect,
		Title: "can create or change role bindings",
		Why:   "a binding hands the subject's own permissions, or bindable roles, to any identity it controls",
		Fix:   "leave binding management to cluster administrators or a GitOps controller",
		sev:   severities{SeverityHigh, SeverityMedium, SeverityLow},
		actions: concat(
			acts([]string{"create", "update", "patch"}, rbacGroup, "rolebindings"),
			clusterOnly(acts([]string{"create", "update", "patch"}, rbacGroup, "clusterrolebindings")),
		),
	},
	{
		ID: "nodes-proxy", Category: CategoryIndirect,
		Title:   "can reach the kubelet API through nodes/proxy",
		Why:     "the kubelet API runs commands in every pod of the node, bypassing pods/exec checks",
		Fix:     "remove nodes/proxy; monitoring needs only nodes/metrics or nodes/stats",
		sev:     severities{SeverityCritical, SeverityCritical, SeverityHigh},
		actions: clusterOnly(acts([]string{"get", "create"}, "", "nodes/proxy")),
	},
	{
		ID: "csr-approve", Category: CategoryIndirect,
		Title:   "can approve certificate signing requests",
		Why:     "an approved client certificate can name any user or group, system:masters included",
		Fix:     "leave CSR approval to the controller manager; limit signers with the approve verb on signers",
		sev:     severities{SeverityHigh, SeverityHigh, SeverityMedium},
		actions: clusterOnly(acts([]string{"update", "patch"}, "certificates.k8s.io", "certificatesigningrequests/approval")),
	},
	{
		ID: "webhook-write", Category: CategoryIndirect,
		Title: "can create or change admission webhook configurations",
		Why:   "an admission webhook receives every secret written through the API, and can rewrite pods",
		Fix:   "restrict webhook configuration writes to cluster administrators",
		sev:   severities{SeverityHigh, SeverityHigh, SeverityMedium},
		actions: clusterOnly(acts([]string{"create", "update", "patch"}, "admissionregistration.k8s.io",
			"mutatingwebhookconfigurations", "validatingwebhookconfigurations")),
	},
	{
		ID: "serviceaccount-automount", Category: CategoryHygiene,
		Title: "service account token auto-mounted in pods that do not use the API",
		Why:   "the token is readable by anything that compromises the pod, for no benefit",
		Fix:   "set automountServiceAccountToken: false on the service account or the pod",
	},
	{
		ID: "serviceaccount-token-secret", Category: CategoryHygiene,
		Title: "long-lived service account token secret",
		Why:   "kubernetes.io/service-account-token secrets never expire and are readable by anyone who can read secrets",
		Fix:   "delete the secret and use short-lived tokens (TokenRequest, projected volumes)",
	},
	{
		ID: "binding-missing-subject", Category: CategoryHygiene,
		Title: "binding to a service account that does not exist",
		Why:   "whoever creates a service account of that name inherits the permissions",
		Fix:   "delete the binding or the stale subject",
	},
	{
		ID: "binding-missing-role", Category: CategoryHygiene,
		Title: "binding to a role that does not exist",
		Why:   "whoever creates a role of that name decides what the subjects may do",
		Fix:   "delete the binding",
	},
}

const rbacGroup = "rbac.authorization.k8s.io"

// CheckByID returns the check with the id, or nil.
func CheckByID(id string) *Check {
	for _, c := range Checks {
		if c.ID == id {
			return c
		}
	}
	return nil
}
