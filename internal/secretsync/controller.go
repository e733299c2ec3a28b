package secretsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Config configures Run. Dynamic and Coffer are required.
type Config struct {
	// Dynamic is the controller's only Kubernetes client: the typed
	// clientset would link the registration of every API type into the
	// coffer binary (see elector).
	Dynamic dynamic.Interface
	Coffer  Coffer
	// Role is the Coffer role of a CofferSecret without spec.role.
	Role string
	// Audience of the service-account tokens the controller mints
	// (default "coffer").
	Audience string
	// Namespace limits the controller to one namespace ("": all).
	Namespace string
	// LeaseNamespace and LeaseName name the coordination.k8s.io Lease of
	// the leader election (required); Identity is this replica's holder
	// identity (required, unique per replica).
	LeaseNamespace, LeaseName, Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election
	// (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Resync is the informers' resync period, a safety net only (default
	// 10m).
	Resync time.Duration
	// Wait is how long one long-poll waits (default 50s, at most 5m).
	Wait time.Duration
	// Workers reconciling in parallel (default 2).
	Workers int
	// MinRetry and MaxRetry bound the backoff of a failed reconcile and of
	// a denied secret's re-check (defaults 1s and 5m).
	MinRetry, MaxRetry time.Duration
	Logger             *slog.Logger
}

func (c *Config) defaults() error {
	if c.Dynamic == nil || c.Coffer == nil {
		return errors.New("secretsync: Dynamic and Coffer are required")
	}
	if c.LeaseNamespace == "" || c.LeaseName == "" || c.Identity == "" {
		return errors.New("secretsync: LeaseNamespace, LeaseName and Identity are required")
	}
	if c.Audience == "" {
		c.Audience = "coffer"
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline <= 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod <= 0 {
		c.RetryPeriod = 2 * time.Second
	}
	if err := checkElection(c.LeaseDuration, c.RenewDeadline, c.RetryPeriod); err != nil {
		return err
	}
	if c.Resync <= 0 {
		c.Resync = 10 * time.Minute
	}
	if c.Wait <= 0 {
		c.Wait = 50 * time.Second
	}
	if c.Wait > 5*time.Minute {
		c.Wait = 5 * time.Minute
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.MinRetry <= 0 {
		c.MinRetry = time.Second
	}
	if c.MaxRetry < c.MinRetry {
		c.MaxRetry = max(5*time.Minute, c.MinRetry)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// saTokenSeconds is the lifetime of a minted service-account token (the
// TokenRequest API's minimum): it only serves one login.
const saTokenSeconds = 600

// Run takes part in the leader election and, while this replica leads,
// reconciles CofferSecrets. It returns nil when ctx ends, and an error when
// the configuration is incomplete or the lease is lost while ctx is live
// (the process should exit and start again as a follower).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	// Without the CRD the informer would retry its list forever, silently.
	if _, err := cfg.Dynamic.Resource(GVR).Namespace(cfg.Namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("secretsync: the apiserver does not serve %s: install the CofferSecret CRD (deploy/coffer-sync/crd.yaml)", GVR.GroupResource())
		}
		if ctx.Err() == nil {
			return fmt.Errorf("secretsync: listing CofferSecrets: %w", err)
		}
		return nil
	}
	newElector(cfg).run(ctx, func(term context.Context) {
		cfg.Logger.Info("coffer-sync leads", "lease", cfg.LeaseNamespace+"/"+cfg.LeaseName, "identity", cfg.Identity)
		newController(cfg).run(term)
	})
	if ctx.Err() == nil {
		return errors.New("secretsync: lost the leader lease")
	}
	return nil
}

// controller is the state of one leadership term.
type controller struct {
	cfg     Config
	queue   workqueue.TypedRateLimitingInterface[string]
	crs     cache.SharedIndexInformer
	secrets cache.SharedIndexInformer
	events  chan *corev1.Event
	ctx     context.Context

	mu      sync.Mutex
	groups  map[groupKey]*group
	tracked map[string]tracked   // CofferSecret key -> what it names
	synced  map[string]syncState // CofferSecret key -> last successful sync
	wg      sync.WaitGroup       // group watchers
}

type tracked struct {
	group  groupKey
	secret string
}

// syncState is what a successful reconcile wrote: when the resource, the
// Secret and the watched version are all still the same, a reconcile has
// nothing to do and reads nothing from Coffer.
type syncState struct {
	uid        string
	generation int64
	version    uint32
	secretHash [32]byte
	unwatched  bool
}

func newController(cfg Config) *controller {
	rl := workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.MinRetry, cfg.MaxRetry)
	return &controller{
		cfg:     cfg,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[string]{Name: "coffersecrets"}),
		groups:  map[groupKey]*group{},
		tracked: map[string]tracked{},
		synced:  map[string]syncState{},
	}
}

func (c *controller) run(ctx context.Context) {
	c.ctx = ctx
	ns := c.cfg.Namespace
	if ns == "" {
		ns = metav1.NamespaceAll
	}
	c.crs = newInformer(c.cfg.Dynamic, c.cfg.Dynamic.Resource(GVR).Namespace(ns), "", c.cfg.Resync, stripManagedFields)
	c.secrets = newSecretInformer(c.cfg.Dynamic, ns, c.cfg.Resync)

	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	c.crs.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(old, cur any) {
		if statusOnly(old, cur) {
			return
		}
		enqueue(cur)
	}, DeleteFunc: enqueue})
	owner := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*corev1.Secret); ok {
			// Only an owner of the Secret's own namespace: the annotation
			// is anyone's to set who may write Secrets there.
			if key := s.Annotations[AnnotationOwner]; strings.HasPrefix(key, s.Namespace+"/") {
				c.queue.Add(key)
			}
		}
	}
	c.secrets.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: owner, UpdateFunc: func(_, o any) { owner(o) }, DeleteFunc: owner})

	var informers sync.WaitGroup
	c.events = make(chan *corev1.Event, eventBuffer)
	informers.Add(1)
	go func() {
		defer informers.Done()
		c.sendEvents(ctx)
	}()
	for _, inf := range []cache.SharedIndexInformer{c.crs, c.secrets} {
		informers.Add(1)
		go func() {
			defer informers.Done()
			inf.Run(ctx.Done())
		}()
	}
	defer informers.Wait()
	if !cache.WaitForCacheSync(ctx.Done(), c.crs.HasSynced, c.secrets.HasSynced) {
		c.queue.ShutDown()
		return
	}
	var workers sync.WaitGroup
	for range c.cfg.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for c.processNext(ctx) {
			}
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown()
	workers.Wait()
	c.mu.Lock()
	for _, g := range c.groups {
		g.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	retry, err := c.reconcile(ctx, key)
	switch {
	case ctx.Err() != nil:
		// The term is ending: the next leader reconciles it.
	case err != nil:
		c.cfg.Logger.Warn("reconcile failed; retrying", "coffersecret", key, "error", err)
		c.queue.AddRateLimited(key)
	case retry:
		c.queue.AddRateLimited(key)
	default:
		c.queue.Forget(key)
	}
	return true
}

// saToken mints a short-lived token of a service account for the
// controller's audience. The token is never logged.
func (c *controller) saToken(ctx context.Context, ns, sa string) (string, error) {
	exp := int64(saTokenSeconds)
	req := &authv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		// The dynamic client takes the service account's name, part of
		// the subresource's path, from the object.
		ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns},
		Spec:       authv1.TokenRequestSpec{Audiences: []string{c.cfg.Audience}, ExpirationSeconds: &exp},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(req)
	if err != nil {
		return "", err
	}
	out, err := c.cfg.Dynamic.Resource(serviceAccountsGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}, "token")
	if err != nil {
		return "", fmt.Errorf("minting a token for service account %s/%s: %w", ns, sa, err)
	}
	var tr authv1.TokenRequest
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out.Object, &tr); err != nil {
		return "", fmt.Errorf("minting a token for service account %s/%s: reading the TokenRequest: %w", ns, sa, err)
	}
	if tr.Status.Token == "" {
		return "", fmt.Errorf("minting a token for service account %s/%s: the TokenRequest returned no token", ns, sa)
	}
	return tr.Status.Token, nil
}

// The core resources the controller writes through the dynamic client.
var (
	secretsGVR         = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	serviceAccountsGVR = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
	eventsGVR          = schema.GroupVersionResource{Version: "v1", Resource: "events"}
)

// eventBuffer is how many events may wait for the apiserver; past it an
// event is dropped rather than slow a reconcile (as client-go's recorder
// does).
const eventBuffer = 100

// event records an event on a CofferSecret; messages never hold a value.
// It never blocks: the events are written by sendEvents.
func (c *controller) event(u *unstructured.Unstructured, typ, reason, format string, a ...any) {
	if c.events == nil {
		return
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta: metav1.ObjectMeta{Namespace: u.GetNamespace(),
			Name: fmt.Sprintf("%s.%x", u.GetName(), now.UnixNano())},
		InvolvedObject: corev1.ObjectReference{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(),
			Name: u.GetName(), UID: u.GetUID(), ResourceVersion: u.GetResourceVersion()},
		Reason: reason, Message: fmt.Sprintf(format, a...), Type: typ,
		Source:         corev1.EventSource{Component: ManagedBy},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	select {
	case c.events <- ev:
	default:
		c.cfg.Logger.Warn("event dropped: too many waiting", "reason", reason, "coffersecret", u.GetNamespace()+"/"+u.GetName())
	}
}

// sendEvents writes the recorded events until ctx ends.
func (c *controller) sendEvents(ctx context.Context) {
	for {
		var ev *corev1.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-c.events:
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ev)
		if err == nil {
			_, err = c.cfg.Dynamic.Resource(eventsGVR).Namespace(ev.Namespace).Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			c.cfg.Logger.Warn("writing an event failed", "reason", ev.Reason, "error", err)
		}
	}
}

// stripManagedFields drops an object's managedFields before the informer
// caches it.
func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

// statusOnly reports an update of a CofferSecret that changed nothing but
// its status (the controller's own status patches, echoed back): it needs
// no reconcile, and queueing it would let any status message that differs
// between attempts turn a failing CofferSecret into a loop past the
// backoff. A resync (same resourceVersion) and any change of generation,
// labels, annotations, owners or deletion are still queued.
func statusOnly(old, cur any) bool {
	a, errA := meta.Accessor(old)
	b, errB := meta.Accessor(cur)
	if errA != nil || errB != nil || a.GetResourceVersion() == b.GetResourceVersion() {
		return false
	}
	return a.GetGeneration() == b.GetGeneration() && a.GetDeletionTimestamp().Equal(b.GetDeletionTimestamp()) &&
		maps.Equal(a.GetLabels(), b.GetLabels()) && maps.Equal(a.GetAnnotations(), b.GetAnnotations()) &&
		slices.EqualFunc(a.GetOwnerReferences(), b.GetOwnerReferences(), func(x, y metav1.OwnerReference) bool { return x.UID == y.UID })
}

// checkElection refuses election timings under which two replicas could
// lead at once: the Lease records whole seconds, so a lease under a second
// is always expired; and a leader notices a failed renewal only at its
// next try after the renew deadline, so it may lead for up to renew+retry
// after its last renewal, which must end before another replica may take
// the Lease.
func checkElection(lease, renew, retry time.Duration) error {
	switch {
	case lease < time.Second || lease%time.Second != 0:
		return fmt.Errorf("secretsync: the lease duration must be whole seconds, at least 1s (not %s)", lease)
	case retry <= 0 || renew <= retry || renew+retry >= lease:
		return fmt.Errorf("secretsync: want lease duration (%s) > renew deadline (%s) + retry period (%s), and renew deadline > retry period > 0", lease, renew, retry)
	}
	return nil
}
