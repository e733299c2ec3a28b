package secretsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// errConflict: the target Secret exists and is not this resource's.
type errConflict struct{ name string }

func (e errConflict) Error() string {
	return fmt.Sprintf("Secret %s exists and is not managed by this CofferSecret; it is left untouched (delete or rename it, or set spec.target.name)", e.name)
}

// reconcile brings one CofferSecret's Secret and status up to date. retry
// asks for a backoff requeue without logging an error (a condition the
// status already reports).
func (c *controller) reconcile(ctx context.Context, key string) (retry bool, err error) {
	obj, exists, err := c.crs.GetIndexer().GetByKey(key)
	if err != nil {
		return false, err
	}
	if !exists {
		c.untrack(key)
		return false, nil
	}
	u := obj.(*unstructured.Unstructured)
	cs, err := fromUnstructured(u)
	if err != nil {
		c.untrack(key)
		return false, c.setStatus(ctx, u, nil, ReasonInvalidSpec, "the resource does not match the CofferSecret schema: "+err.Error(), 0)
	}
	spec := cs.Spec
	spec.defaults(cs.Metadata.Name, c.cfg.Role)
	if err := spec.validate(); err != nil {
		c.untrack(key)
		return false, c.setStatus(ctx, u, cs, ReasonInvalidSpec, err.Error(), 0)
	}
	gk := groupKey{namespace: cs.Metadata.Namespace, serviceAccount: spec.ServiceAccountName, role: spec.Role}
	g := c.track(key, gk, spec.Secret, cs.Status.SyncedVersion)
	if c.upToDate(key, cs, g, &spec) {
		return false, nil
	}

	tok, err := c.token(ctx, g)
	if err != nil {
		reason := reasonOf(err)
		if apierrors.IsNotFound(err) {
			reason = ReasonNotFound // the service account does not exist
		} else if apierrors.IsForbidden(err) {
			reason = ReasonError // the controller may not mint tokens: its RBAC
		}
		return true, c.setStatus(ctx, u, cs, reason, conditionText(err), 0)
	}
	v, err := c.cfg.Coffer.SecretGet(ctx, tok, spec.Secret)
	if err != nil {
		if statusOf(err) == http.StatusUnauthorized {
			c.dropToken(g, tok)
		}
		return true, c.setStatus(ctx, u, cs, reasonOf(err), fmt.Sprintf("reading Coffer secret %q as %s: %s", spec.Secret, gk, conditionText(err)), 0)
	}
	unwatched := c.noteRead(g, spec.Secret, v.Version)
	data, err := spec.secretData(v.Fields)
	if err != nil {
		reason := ReasonInvalidSpec
		if _, missing := err.(errMissingField); missing {
			reason = ReasonNotFound
		}
		// A new version is needed to change this: the watch queues it.
		return false, c.setStatus(ctx, u, cs, reason, fmt.Sprintf("Coffer secret %q version %d: %v", spec.Secret, v.Version, err), 0)
	}
	_, wrote, err := c.applySecret(ctx, cs, &spec, v.Version, data)
	if err != nil {
		var ce errConflict
		if asConflict(err, &ce) {
			return true, c.setStatus(ctx, u, cs, ReasonConflict, ce.Error(), 0)
		}
		// The controller's own RBAC, a quota, an admission webhook: the
		// status says so, and the error is logged and retried.
		if serr := c.setStatus(ctx, u, cs, ReasonError, conditionText(err), 0); serr != nil {
			return false, serr
		}
		return false, err
	}
	if wrote {
		c.event(u, corev1.EventTypeNormal, ReasonSynced, "wrote Secret %s from Coffer secret %s version %d", spec.Target.Name, spec.Secret, v.Version)
	}
	if prev := cs.Status.SyncedVersion; prev != 0 && prev != v.Version {
		if err := c.restart(ctx, u, cs, &spec); err != nil {
			return false, err
		}
	}
	msg := fmt.Sprintf("Secret %s holds version %d of Coffer secret %s", spec.Target.Name, v.Version, spec.Secret)
	if unwatched {
		msg += fmt.Sprintf("; new versions are not watched: %s may read the secret but not list it (secret:List), so they arrive only with the resync", gk)
	}
	if err := c.setStatus(ctx, u, cs, ReasonSynced, msg, v.Version); err != nil {
		return false, err
	}
	c.mu.Lock()
	c.synced[key] = syncState{uid: cs.Metadata.UID, generation: cs.Metadata.Generation, version: v.Version, unwatched: unwatched,
		secretHash: secretHash(desiredSecret(cs, &spec, v.Version, data))}
	c.mu.Unlock()
	return false, nil
}

func asConflict(err error, out *errConflict) bool {
	ce, ok := err.(errConflict)
	if ok {
		*out = ce
	}
	return ok
}

// upToDate: the last sync of this very resource generation wrote the
// version the watch holds, its status says so, and the Secret in the cache
// still holds what was written (by content: a Secret edited or deleted by
// hand is written again). Then nothing is read from Coffer: the informers'
// resync and the status update's own event cost no secret read.
func (c *controller) upToDate(key string, cs *CofferSecret, g *group, spec *Spec) bool {
	c.mu.Lock()
	st, ok := c.synced[key]
	c.mu.Unlock()
	if !ok || st.uid != cs.Metadata.UID || st.generation != cs.Metadata.Generation {
		return false
	}
	if st.version != c.knownVersion(g, spec.Secret) || cs.Status.SyncedVersion != st.version || st.unwatched != c.unwatched(g, spec.Secret) {
		return false
	}
	if r := cs.Status.ready(); r == nil || r.Status != "True" {
		return false
	}
	obj, exists, err := c.secrets.GetIndexer().GetByKey(cs.Metadata.Namespace + "/" + spec.Target.Name)
	if err != nil || !exists {
		return false
	}
	return secretHash(obj.(*corev1.Secret)) == st.secretHash
}

// secretHash digests what the controller manages of a Secret: its type,
// data, owner references and the controller's labels and annotations. It
// is kept in memory only.
func secretHash(s *corev1.Secret) [sha256.Size]byte {
	h := sha256.New()
	field := func(v string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	field(string(s.Type))
	for _, k := range slices.Sorted(maps.Keys(s.Data)) {
		field(k)
		field(string(s.Data[k]))
	}
	field("|")
	for _, k := range []string{AnnotationSecret, AnnotationVersion, AnnotationOwner, AnnotationOwnerUID} {
		field(s.Annotations[k])
	}
	field(s.Labels[LabelManagedBy])
	for _, r := range s.OwnerReferences {
		field(string(r.UID))
		field(strconv.FormatBool(isTrue(r.Controller)))
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// desiredSecret is the Secret a resource wants.
func desiredSecret(cs *CofferSecret, spec *Spec, version uint32, data map[string][]byte) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: spec.Target.Name, Namespace: cs.Metadata.Namespace,
			Labels: map[string]string{LabelManagedBy: ManagedBy},
			Annotations: map[string]string{
				AnnotationSecret:   spec.Secret,
				AnnotationVersion:  strconv.FormatUint(uint64(version), 10),
				AnnotationOwner:    cs.Metadata.Namespace + "/" + cs.Metadata.Name,
				AnnotationOwnerUID: cs.Metadata.UID,
			},
		},
		Type: corev1.SecretType(spec.Target.Type),
		Data: data,
	}
	if spec.Target.DeletionPolicy == DeletionDelete {
		s.OwnerReferences = []metav1.OwnerReference{ownerRef(cs)}
	}
	return s
}

func isTrue(b *bool) bool { return b != nil && *b }

func ownerRef(cs *CofferSecret) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: Group + "/" + Version, Kind: Kind, Name: cs.Metadata.Name,
		UID: types.UID(cs.Metadata.UID), Controller: &yes}
}

// ours tells whether an existing Secret was written by this resource.
func ours(s *corev1.Secret, cs *CofferSecret) bool {
	return s.Labels[LabelManagedBy] == ManagedBy && s.Annotations[AnnotationOwnerUID] == cs.Metadata.UID
}

// applySecret creates or updates the target Secret, writing only when its
// data, type, version or ownership differ from what it should be. It
// starts from the Secret informer's cache (which holds the managed
// Secrets): a Secret the cache does not have is created, and only when
// that finds one already there is it read from the API, to tell this
// resource's Secret from someone else's. An update carries the cached
// resourceVersion, so a stale cache makes it fail and retry, never
// overwrite a newer write.
func (c *controller) applySecret(ctx context.Context, cs *CofferSecret, spec *Spec, version uint32, data map[string][]byte) (rv string, wrote bool, err error) {
	api := secretAPI{c.cfg.Dynamic.Resource(secretsGVR).Namespace(cs.Metadata.Namespace)}
	want := desiredSecret(cs, spec, version, data)
	cur := c.cachedSecret(cs.Metadata.Namespace, want.Name)
	if cur == nil {
		created, err := api.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			return created.ResourceVersion, true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", false, fmt.Errorf("creating Secret %s: %w", want.Name, err)
		}
		if cur, err = api.Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
			return "", false, fmt.Errorf("reading Secret %s: %w", want.Name, err)
		}
	}
	if !ours(cur, cs) {
		return "", false, errConflict{name: want.Name}
	}
	if cur.Type != want.Type {
		// The type of a Secret cannot change: replace it.
		if err := api.Delete(ctx, cur.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return "", false, fmt.Errorf("replacing Secret %s to change its type: %w", want.Name, err)
		}
		created, err := api.Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return "", false, fmt.Errorf("creating Secret %s: %w", want.Name, err)
		}
		return created.ResourceVersion, true, nil
	}
	next := cur.DeepCopy()
	if next.Labels == nil {
		next.Labels = map[string]string{}
	}
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	maps.Copy(next.Labels, want.Labels)
	maps.Copy(next.Annotations, want.Annotations)
	next.Data = want.Data
	next.StringData = nil
	refs := next.OwnerReferences[:0:0]
	for _, r := range next.OwnerReferences {
		if string(r.UID) != cs.Metadata.UID {
			refs = append(refs, r)
		}
	}
	next.OwnerReferences = append(refs, want.OwnerReferences...)
	if sameSecret(cur, next) {
		return cur.ResourceVersion, false, nil
	}
	updated, err := api.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return "", false, fmt.Errorf("updating Secret %s: %w", want.Name, err)
	}
	return updated.ResourceVersion, true, nil
}

// secretAPI writes typed Secrets through the dynamic client.
type secretAPI struct{ api dynamic.ResourceInterface }

func (a secretAPI) typed(u *unstructured.Unstructured, err error) (*corev1.Secret, error) {
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
		return nil, err
	}
	return s, nil
}

func (a secretAPI) untyped(s *corev1.Secret) (*unstructured.Unstructured, error) {
	s = s.DeepCopy()
	s.APIVersion, s.Kind = "v1", "Secret"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// Create creates s.
func (a secretAPI) Create(ctx context.Context, s *corev1.Secret, o metav1.CreateOptions) (*corev1.Secret, error) {
	u, err := a.untyped(s)
	if err != nil {
		return nil, err
	}
	return a.typed(a.api.Create(ctx, u, o))
}

// Update updates s (its resourceVersion is the precondition).
func (a secretAPI) Update(ctx context.Context, s *corev1.Secret, o metav1.UpdateOptions) (*corev1.Secret, error) {
	u, err := a.untyped(s)
	if err != nil {
		return nil, err
	}
	return a.typed(a.api.Update(ctx, u, o))
}

// Get reads the Secret name.
func (a secretAPI) Get(ctx context.Context, name string, o metav1.GetOptions) (*corev1.Secret, error) {
	return a.typed(a.api.Get(ctx, name, o))
}

// Delete deletes the Secret name.
func (a secretAPI) Delete(ctx context.Context, name string, o metav1.DeleteOptions) error {
	return a.api.Delete(ctx, name, o)
}

// cachedSecret is the Secret ns/name in the informer's cache, or nil.
func (c *controller) cachedSecret(ns, name string) *corev1.Secret {
	if c.secrets == nil {
		return nil
	}
	obj, ok, err := c.secrets.GetIndexer().GetByKey(ns + "/" + name)
	if err != nil || !ok {
		return nil
	}
	return obj.(*corev1.Secret)
}

// sameSecret compares what the controller manages of two Secrets.
func sameSecret(a, b *corev1.Secret) bool {
	if !maps.Equal(a.Labels, b.Labels) || !maps.Equal(a.Annotations, b.Annotations) || len(a.Data) != len(b.Data) {
		return false
	}
	for k, v := range a.Data {
		w, ok := b.Data[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	if len(a.OwnerReferences) != len(b.OwnerReferences) {
		return false
	}
	for i := range a.OwnerReferences {
		x, y := a.OwnerReferences[i], b.OwnerReferences[i]
		if x.UID != y.UID || x.Kind != y.Kind || x.APIVersion != y.APIVersion || x.Name != y.Name || isTrue(x.Controller) != isTrue(y.Controller) {
			return false
		}
	}
	return true
}

// restart patches the pod template of each rolloutRestart target with
// kubectl's restartedAt annotation, as `kubectl rollout restart` does. A
// missing target is reported in an event and skipped.
func (c *controller) restart(ctx context.Context, u *unstructured.Unstructured, cs *CofferSecret, spec *Spec) error {
	if len(spec.RolloutRestart) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		// Nanoseconds, not kubectl's whole seconds: a second restart
		// within the same second must still change the template.
		"annotations": map[string]string{AnnotationRestartedAt: time.Now().UTC().Format(time.RFC3339Nano)}}}}})
	if err != nil {
		return err
	}
	for _, r := range spec.RolloutRestart {
		var gvr schema.GroupVersionResource
		switch r.Kind {
		case "Deployment":
			gvr = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		case "StatefulSet":
			gvr = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
		default:
			continue
		}
		_, err = c.cfg.Dynamic.Resource(gvr).Namespace(cs.Metadata.Namespace).Patch(ctx, r.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if apierrors.IsNotFound(err) {
			c.event(u, corev1.EventTypeWarning, "RolloutRestartFailed", "%s %s does not exist; not restarted", r.Kind, r.Name)
			continue
		}
		if err != nil {
			return fmt.Errorf("rollout restart of %s %s: %w", r.Kind, r.Name, err)
		}
		c.event(u, corev1.EventTypeNormal, "RolloutRestart", "restarted %s %s after the Secret changed", r.Kind, r.Name)
	}
	return nil
}

// setStatus writes the Ready condition (True for ReasonSynced) and, on a
// sync, the synced version, through the status subresource. Nothing is
// written when the status would not change but for the times; a changed
// reason is also an event.
func (c *controller) setStatus(ctx context.Context, u *unstructured.Unstructured, cs *CofferSecret, reason, message string, version uint32) error {
	var old Status
	var gen int64
	if cs != nil {
		old = cs.Status
		gen = cs.Metadata.Generation
	} else {
		gen = u.GetGeneration()
	}
	now := time.Now().UTC().Format(time.RFC3339)
	st := old
	st.Conditions = nil
	for _, cd := range old.Conditions {
		if cd.Type != "Ready" {
			st.Conditions = append(st.Conditions, cd)
		}
	}
	status := "False"
	if reason == ReasonSynced {
		status = "True"
	}
	cond := Condition{Type: "Ready", Status: status, Reason: reason, Message: message, LastTransitionTime: now, ObservedGeneration: gen}
	prev := old.ready()
	if prev != nil && prev.Status == status {
		cond.LastTransitionTime = prev.LastTransitionTime
	}
	st.Conditions = append(st.Conditions, cond)
	st.ObservedGeneration = gen
	if reason == ReasonSynced {
		st.SyncedVersion = version
	}
	changed := prev == nil || prev.Status != cond.Status || prev.Reason != cond.Reason || prev.Message != cond.Message ||
		prev.ObservedGeneration != gen || old.ObservedGeneration != gen || old.SyncedVersion != st.SyncedVersion
	if !changed {
		return nil
	}
	if reason == ReasonSynced {
		st.LastSyncTime = now
	}
	if reason != ReasonSynced && (prev == nil || prev.Reason != reason) {
		c.event(u, corev1.EventTypeWarning, reason, "%s", message)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	// A merge patch of the whole status: no resourceVersion precondition,
	// so a cache that has not seen the last status write yet does not make
	// the write fail; the status is what this reconcile observed.
	patch, err := json.Marshal(map[string]any{"status": m})
	if err != nil {
		return err
	}
	_, err = c.cfg.Dynamic.Resource(GVR).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating the status of CofferSecret %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return nil
}
