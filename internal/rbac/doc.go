// Package rbac audits Kubernetes RBAC for who can read or change Secrets.
//
// Anyone the API server lets read a Secret gets its plaintext, whatever the
// encryption at rest. This package answers, offline and exactly, the
// questions an operator asks about that:
//
//   - can this subject do this verb on this resource (Engine.Can),
//   - who can (Engine.WhoCan),
//   - and which grants let someone read Secrets directly or by an indirect
//     path, or are poor hygiene (Audit).
//
// The model is a Snapshot: the Roles, ClusterRoles, RoleBindings,
// ClusterRoleBindings, ServiceAccounts, Pods and service-account token
// Secrets of a cluster, loaded from manifests (Load, LoadFiles) or from a
// live cluster (LoadLive). NewEngine resolves it once: aggregated
// ClusterRoles get the rules of the roles their selectors match, as the
// clusterrole-aggregation controller would set them, and bindings are
// indexed by subject.
//
// Authorization follows the upstream RBAC authorizer line by line
// (k8s.io/kubernetes plugin/pkg/auth/authorizer/rbac and
// pkg/registry/rbac/validation): ClusterRoleBindings apply everywhere,
// RoleBindings only in their namespace (a ClusterRole they reference is
// namespaced by them), a ServiceAccount subject without a namespace means
// the binding's namespace (and nothing in a ClusterRoleBinding), and a rule
// matches when its verb, API group, resource (`*`, exact, or `*/sub` for a
// subresource; `pods/*` is not a wildcard) and resourceNames all match.
// There is no deny: any matching rule allows.
package rbac
