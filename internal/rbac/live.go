package rbac

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// liveResource is a resource LoadLive lists.
type liveResource struct {
	gvr  schema.GroupVersionResource
	kind string
	// optional resources are skipped, with a note, when listing them is
	// forbidden.
	optional      bool
	fieldSelector string
}

var liveResources = []liveResource{
	{gvr: schema.GroupVersionResource{Group: rbacGroup, Version: "v1", Resource: "clusterroles"}, kind: "ClusterRole"},
	{gvr: schema.GroupVersionResource{Group: rbacGroup, Version: "v1", Resource: "clusterrolebindings"}, kind: "ClusterRoleBinding"},
	{gvr: schema.GroupVersionResource{Group: rbacGroup, Version: "v1", Resource: "roles"}, kind: "Role"},
	{gvr: schema.GroupVersionResource{Group: rbacGroup, Version: "v1", Resource: "rolebindings"}, kind: "RoleBinding"},
	{gvr: schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, kind: "ServiceAccount", optional: true},
	{gvr: schema.GroupVersionResource{Version: "v1", Resource: "pods"}, kind: "Pod", optional: true},
	// Only token secrets, for the hygiene check; their values are dropped
	// as they are decoded.
	{gvr: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, kind: "Secret", optional: true,
		fieldSelector: "type=kubernetes.io/service-account-token"},
}

// RESTConfig loads a client configuration from a kubeconfig file (""
// follows the usual rules: $KUBECONFIG, then ~/.kube/config) and context
// ("" is the current one).
func RESTConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
}

// LoadLive reads a Snapshot from a cluster with list calls only (it never
// writes). RBAC objects are required; service accounts, pods and token
// secrets are read when allowed, and a note names any that were not.
func LoadLive(ctx context.Context, cfg *rest.Config) (*Snapshot, []string, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "coffer-rbac"
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	s := &Snapshot{}
	var notes []string
	for _, lr := range liveResources {
		err := listAll(ctx, dc, lr, s)
		if err != nil && lr.optional && (apierrors.IsForbidden(err) || apierrors.IsNotFound(err)) {
			notes = append(notes, fmt.Sprintf("cannot list %s (%v): its checks are incomplete", lr.gvr.Resource, err))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", lr.gvr.Resource, err)
		}
	}
	return s, notes, nil
}

// listAll pages through a resource in all namespaces.
func listAll(ctx context.Context, dc dynamic.Interface, lr liveResource, s *Snapshot) error {
	opts := metav1.ListOptions{Limit: 500, FieldSelector: lr.fieldSelector}
	apiVersion := lr.gvr.Version
	if lr.gvr.Group != "" {
		apiVersion = lr.gvr.Group + "/" + lr.gvr.Version
	}
	for {
		list, err := dc.Resource(lr.gvr).List(ctx, opts)
		if err != nil {
			return err
		}
		for i := range list.Items {
			obj := list.Items[i].Object
			obj["apiVersion"], obj["kind"] = apiVersion, lr.kind
			raw, err := json.Marshal(obj)
			if err != nil {
				return err
			}
			if err := s.addObject(raw); err != nil {
				return err
			}
		}
		opts.Continue = list.GetContinue()
		if opts.Continue == "" {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
