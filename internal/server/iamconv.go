package server

import (
	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/iam"
)

// The REST wire types of policies, roles, access keys and clusters
// (client) and the IAM service's own types meet here. Where a wire type
// and a service type have the same fields, a Go conversion (iam.Policy(p))
// is the whole mapping: it ignores struct tags and stops compiling as soon
// as either side gains or changes a field, so no field is dropped
// silently. As in keyconv.go, an answer function takes a service call's
// results as they are and gives the zero answer with an error.

// policyAnswer is the REST answer of an IAM call that returns a policy.
func policyAnswer(p iam.Policy, err error) (client.Policy, error) {
	if err != nil {
		return client.Policy{}, err
	}
	return client.Policy(p), nil
}

// wirePolicyList is the answer of GET /v1/policies.
func wirePolicyList(ps []iam.Policy) client.PolicyList {
	out := client.PolicyList{Policies: make([]client.Policy, len(ps))}
	for i, p := range ps {
		out.Policies[i] = client.Policy(p)
	}
	return out
}

// simulateAnswer is the answer of POST /v1/policies/simulate.
func simulateAnswer(r iam.SimulateResult, err error) (client.SimulateResponse, error) {
	if err != nil {
		return client.SimulateResponse{}, err
	}
	return client.SimulateResponse(r), nil
}

// keyPolicyAnswer is the REST answer of an IAM call that returns a key
// policy.
func keyPolicyAnswer(kp iam.KeyPolicy, err error) (client.KeyPolicy, error) {
	if err != nil {
		return client.KeyPolicy{}, err
	}
	return client.KeyPolicy(kp), nil
}

// roleRequest is the IAM service's role for a POST or PUT /v1/roles body.
func roleRequest(r *client.Role) iam.Role {
	out := iam.Role{Name: r.Name, Description: r.Description, Policies: r.Policies, TTL: r.TTL, MaxTTL: r.MaxTTL,
		TrustPrincipals: r.TrustPrincipals, BoundCIDRs: r.BoundCIDRs, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	if r.Kubernetes != nil {
		out.Kubernetes = make([]iam.KubernetesTrust, len(r.Kubernetes))
		for i, k := range r.Kubernetes {
			out.Kubernetes[i] = iam.KubernetesTrust(k)
		}
	}
	if r.Certificates != nil {
		out.Certificates = make([]iam.CertificateTrust, len(r.Certificates))
		for i, c := range r.Certificates {
			out.Certificates[i] = iam.CertificateTrust(c)
		}
	}
	return out
}

// wireRole is the REST form of a role.
func wireRole(r iam.Role) client.Role {
	out := client.Role{Name: r.Name, Description: r.Description, Policies: r.Policies, TTL: r.TTL, MaxTTL: r.MaxTTL,
		TrustPrincipals: r.TrustPrincipals, BoundCIDRs: r.BoundCIDRs, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	if r.Kubernetes != nil {
		out.Kubernetes = make([]client.KubernetesTrust, len(r.Kubernetes))
		for i, k := range r.Kubernetes {
			out.Kubernetes[i] = client.KubernetesTrust(k)
		}
	}
	if r.Certificates != nil {
		out.Certificates = make([]client.CertificateTrust, len(r.Certificates))
		for i, c := range r.Certificates {
			out.Certificates[i] = client.CertificateTrust(c)
		}
	}
	return out
}

// roleAnswer is the REST answer of an IAM call that returns a role.
func roleAnswer(r iam.Role, err error) (client.Role, error) {
	if err != nil {
		return client.Role{}, err
	}
	return wireRole(r), nil
}

// wireRoleList is the answer of GET /v1/roles.
func wireRoleList(rs []iam.Role) client.RoleList {
	out := client.RoleList{Roles: make([]client.Role, len(rs))}
	for i, r := range rs {
		out.Roles[i] = wireRole(r)
	}
	return out
}

// accessKeyAnswer is the REST answer of an IAM call that returns an
// access key.
func accessKeyAnswer(a iam.AccessKey, err error) (client.AccessKey, error) {
	if err != nil {
		return client.AccessKey{}, err
	}
	return client.AccessKey(a), nil
}

// createdAccessKeyAnswer is the answer of POST /v1/access-keys, the only
// one with the secret.
func createdAccessKeyAnswer(a iam.CreatedAccessKey, err error) (client.CreateAccessKeyResponse, error) {
	if err != nil {
		return client.CreateAccessKeyResponse{}, err
	}
	return client.CreateAccessKeyResponse{AccessKey: client.AccessKey(a.AccessKey), SecretAccessKey: a.SecretAccessKey}, nil
}

// wireAccessKeyList is the answer of GET /v1/access-keys.
func wireAccessKeyList(as []iam.AccessKey) client.AccessKeyList {
	out := client.AccessKeyList{AccessKeys: make([]client.AccessKey, len(as))}
	for i, a := range as {
		out.AccessKeys[i] = client.AccessKey(a)
	}
	return out
}

// clusterAnswer is the REST answer of an IAM call that returns a cluster.
func clusterAnswer(c iam.Cluster, err error) (client.Cluster, error) {
	if err != nil {
		return client.Cluster{}, err
	}
	return client.Cluster(c), nil
}

// wireClusterList is the answer of GET /v1/auth/kubernetes/clusters.
func wireClusterList(cs []iam.Cluster) client.ClusterList {
	out := client.ClusterList{Clusters: make([]client.Cluster, len(cs))}
	for i, c := range cs {
		out.Clusters[i] = client.Cluster(c)
	}
	return out
}
