// Package secretsync is the controller behind `coffer k8s sync`: it
// materialises the Coffer secrets named by CofferSecret custom resources
// (cofferkms.io/v1alpha1) into Kubernetes Secrets, reading each secret as
// the service account of the resource's namespace, and refreshes them when
// a new version becomes current through Coffer's long-poll on secret
// versions (POST /v1/secrets/wait), not by re-reading every secret each
// period. See docs/k8s-sync.md.
//
// Values and tokens are never logged, put in an event, a condition message
// or an error.
package secretsync

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The CofferSecret resource.
const (
	Group    = "cofferkms.io"
	Version  = "v1alpha1"
	Kind     = "CofferSecret"
	Resource = "coffersecrets"
)

// GVR is the CofferSecret resource for the dynamic client.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// Labels and annotations of the Secrets the controller writes.
const (
	// LabelManagedBy (value ManagedBy) marks a Secret the controller wrote;
	// its Secret informer sees only those.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "coffer-sync"
	// AnnotationSecret names the Coffer secret a Secret holds.
	AnnotationSecret = "cofferkms.io/coffer-secret"
	// AnnotationVersion is the Coffer version a Secret holds.
	AnnotationVersion = "cofferkms.io/version"
	// AnnotationOwner is "NAMESPACE/NAME" of the CofferSecret that wrote a
	// Secret, and AnnotationOwnerUID its uid: a Secret whose uid annotation
	// is not the resource's own is never overwritten.
	AnnotationOwner    = "cofferkms.io/owner"
	AnnotationOwnerUID = "cofferkms.io/owner-uid"
	// AnnotationRestartedAt is kubectl's rollout-restart annotation of a
	// pod template.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
)

// Condition reasons of the Ready condition.
const (
	ReasonSynced      = "Synced"
	ReasonForbidden   = "Forbidden"
	ReasonNotFound    = "NotFound"
	ReasonConflict    = "Conflict"
	ReasonInvalidSpec = "InvalidSpec"
	ReasonError       = "Error"
)

// Deletion policies of a target Secret.
const (
	DeletionDelete = "Delete"
	DeletionRetain = "Retain"
)

// CofferSecret is the part of the custom resource the controller reads.
type CofferSecret struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Metadata   struct {
		Name       string `json:"name"`
		Namespace  string `json:"namespace"`
		UID        string `json:"uid"`
		Generation int64  `json:"generation,omitempty"`
	} `json:"metadata"`
	Spec   Spec   `json:"spec"`
	Status Status `json:"status,omitempty"`
}

// Spec is a CofferSecret's spec.
type Spec struct {
	// Secret is the Coffer secret's name.
	Secret string `json:"secret"`
	// Role is the Coffer Kubernetes-auth role (default: the controller's).
	Role string `json:"role,omitempty"`
	// ServiceAccountName is the service account of the resource's
	// namespace whose token logs in to Role (default "default").
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	Target             Target `json:"target,omitempty"`
	// Data picks and renames fields; empty means every field under its
	// own name.
	Data           []DataItem      `json:"data,omitempty"`
	RolloutRestart []RolloutTarget `json:"rolloutRestart,omitempty"`
}

// Target describes the Kubernetes Secret written.
type Target struct {
	Name           string `json:"name,omitempty"`
	Type           string `json:"type,omitempty"`
	DeletionPolicy string `json:"deletionPolicy,omitempty"`
}

// DataItem maps a Coffer field to a Secret key (Key defaults to Field).
type DataItem struct {
	Key   string `json:"key,omitempty"`
	Field string `json:"field"`
}

// RolloutTarget is a workload restarted after the Secret changed.
type RolloutTarget struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Status is a CofferSecret's status.
type Status struct {
	Conditions         []Condition `json:"conditions,omitempty"`
	SyncedVersion      uint32      `json:"syncedVersion,omitempty"`
	LastSyncTime       string      `json:"lastSyncTime,omitempty"`
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
}

// Condition is a status condition (the metav1.Condition fields).
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
	LastTransitionTime string `json:"lastTransitionTime"`
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
}

// fromUnstructured converts a resource read through the dynamic client.
func fromUnstructured(u *unstructured.Unstructured) (*CofferSecret, error) {
	var cs CofferSecret
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cs); err != nil {
		return nil, err
	}
	return &cs, nil
}

// ready returns the Ready condition, or nil.
func (s *Status) ready() *Condition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == "Ready" {
			return &s.Conditions[i]
		}
	}
	return nil
}

// defaults fills the spec's defaults; role is the controller's default
// role.
func (s *Spec) defaults(name, role string) {
	if s.Role == "" {
		s.Role = role
	}
	if s.ServiceAccountName == "" {
		s.ServiceAccountName = "default"
	}
	if s.Target.Name == "" {
		s.Target.Name = name
	}
	if s.Target.Type == "" {
		s.Target.Type = "Opaque"
	}
	if s.Target.DeletionPolicy == "" {
		s.Target.DeletionPolicy = DeletionDelete
	}
	for i := range s.Data {
		if s.Data[i].Key == "" {
			s.Data[i].Key = s.Data[i].Field
		}
	}
}

// validate checks a defaulted spec; the error is the InvalidSpec message.
func (s *Spec) validate() error {
	if strings.TrimSpace(s.Secret) == "" {
		return fmt.Errorf("spec.secret is required")
	}
	if len(s.Secret) > 512 || strings.HasPrefix(s.Secret, "/") || strings.HasSuffix(s.Secret, "/") || strings.Contains(s.Secret, "//") {
		return fmt.Errorf("spec.secret %q is not a Coffer secret name", s.Secret)
	}
	if s.Role == "" {
		return fmt.Errorf("spec.role is empty and the controller has no default --role")
	}
	if errs := validation.IsDNS1123Subdomain(s.ServiceAccountName); len(errs) > 0 {
		return fmt.Errorf("spec.serviceAccountName %q: %s", s.ServiceAccountName, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(s.Target.Name); len(errs) > 0 {
		return fmt.Errorf("spec.target.name %q: %s", s.Target.Name, strings.Join(errs, "; "))
	}
	if s.Target.DeletionPolicy != DeletionDelete && s.Target.DeletionPolicy != DeletionRetain {
		return fmt.Errorf("spec.target.deletionPolicy %q: must be Delete or Retain", s.Target.DeletionPolicy)
	}
	if s.Target.Type == "kubernetes.io/service-account-token" {
		return fmt.Errorf("spec.target.type %q cannot be written by the controller", s.Target.Type)
	}
	keys := map[string]bool{}
	for i, d := range s.Data {
		if d.Field == "" {
			return fmt.Errorf("spec.data[%d].field is required", i)
		}
		if errs := validation.IsConfigMapKey(d.Key); len(errs) > 0 {
			return fmt.Errorf("spec.data[%d].key %q is not a valid Secret key: %s", i, d.Key, strings.Join(errs, "; "))
		}
		if keys[d.Key] {
			return fmt.Errorf("spec.data[%d].key %q is given twice", i, d.Key)
		}
		keys[d.Key] = true
	}
	seen := map[RolloutTarget]bool{}
	for i, r := range s.RolloutRestart {
		if r.Kind != "Deployment" && r.Kind != "StatefulSet" {
			return fmt.Errorf("spec.rolloutRestart[%d].kind %q: must be Deployment or StatefulSet", i, r.Kind)
		}
		if errs := validation.IsDNS1123Subdomain(r.Name); len(errs) > 0 {
			return fmt.Errorf("spec.rolloutRestart[%d].name %q: %s", i, r.Name, strings.Join(errs, "; "))
		}
		if seen[r] {
			return fmt.Errorf("spec.rolloutRestart[%d] %s/%s is given twice", i, r.Kind, r.Name)
		}
		seen[r] = true
	}
	return nil
}

// secretData maps the fields of a Coffer secret version to Secret data;
// the error names a missing field or a field that is not a valid key,
// never a value.
func (s *Spec) secretData(fields map[string]string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(fields))
	if len(s.Data) == 0 {
		for f, v := range fields {
			if errs := validation.IsConfigMapKey(f); len(errs) > 0 {
				return nil, fmt.Errorf("field %q is not a valid Secret key (%s): map it with spec.data", f, strings.Join(errs, "; "))
			}
			out[f] = []byte(v)
		}
	} else {
		for _, d := range s.Data {
			v, ok := fields[d.Field]
			if !ok {
				return nil, errMissingField{fmt.Errorf("the secret has no field %q", d.Field)}
			}
			out[d.Key] = []byte(v)
		}
	}
	// The apiserver refuses a Secret whose values add up to more; refused
	// there, the write would be retried for nothing until a new version.
	size := 0
	for _, v := range out {
		size += len(v)
	}
	if size > maxSecretSize {
		return nil, fmt.Errorf("the Secret's data would be %d bytes, over the %d-byte limit of a Kubernetes Secret (pick fewer fields with spec.data)", size, maxSecretSize)
	}
	return out, nil
}

// maxSecretSize is the most bytes of values a Kubernetes Secret holds.
const maxSecretSize = 1 << 20

// errMissingField: spec.data names a field the version does not have.
type errMissingField struct{ error }
