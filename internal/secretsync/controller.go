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
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Config configures Run. Kube, Dynamic and Coffer are required.
type Config struct {
	Kube    kubernetes.Interface
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
	if c.Kube == nil || c.Dynamic == nil || c.Coffer == nil {
		return errors.New("secretsync: Kube, Dynamic and Coffer are required")
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
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.LeaseNamespace, Name: cfg.LeaseName},
		Client:     cfg.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	// The elector starts OnStartedLeading in a goroutine of its own; Run
	// waits for it so that nothing writes after Run returns.
	var (
		mu      sync.Mutex
		stopped bool
		term    chan struct{}
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
		ReleaseOnCancel: true, Name: cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if stopped {
					mu.Unlock()
					return
				}
				done := make(chan struct{})
				term = done
				mu.Unlock()
				defer close(done)
				cfg.Logger.Info("coffer-sync leads", "lease", cfg.LeaseNamespace+"/"+cfg.LeaseName, "identity", cfg.Identity)
				newController(cfg).run(lctx)
			},
			OnStoppedLeading: func() {
				cfg.Logger.Info("coffer-sync stopped leading", "identity", cfg.Identity)
			},
			OnNewLeader: func(id string) {
				if id != cfg.Identity {
					cfg.Logger.Info("coffer-sync follows", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("secretsync: leader election: %w", err)
	}
	le.Run(ctx)
	mu.Lock()
	stopped = true
	t := term
	mu.Unlock()
	if t != nil {
		<-t
	}
	if ctx.Err() == nil {
		return errors.New("secretsync: lost the leader lease")
	}
	return nil
}

// controller is the state of one leadership term.
type controller struct {
	cfg      Config
	queue    workqueue.TypedRateLimitingInterface[string]
	crs      cache.SharedIndexInformer
	secrets  cache.SharedIndexInformer
	recorder record.EventRecorder
	ctx      context.Context

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
	dyn := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.cfg.Dynamic, c.cfg.Resync, ns, nil)
	c.crs = dyn.ForResource(GVR).Informer()
	kf := informers.NewSharedInformerFactoryWithOptions(c.cfg.Kube, c.cfg.Resync, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelManagedBy + "=" + ManagedBy }))
	c.secrets = kf.Core().V1().Secrets().Informer()
	// The caches hold every CofferSecret and managed Secret; their
	// managedFields (the server-side apply bookkeeping of each writer)
	// are most of an object's size and the controller never reads them.
	for _, inf := range []cache.SharedIndexInformer{c.crs, c.secrets} {
		if err := inf.SetTransform(stripManagedFields); err != nil {
			c.cfg.Logger.Error("informer transform", "error", err)
		}
	}

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

	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Kube.CoreV1().Events("")})
	defer bc.Shutdown()
	c.recorder = bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: ManagedBy})

	dyn.Start(ctx.Done())
	kf.Start(ctx.Done())
	defer func() {
		dyn.Shutdown()
		kf.Shutdown()
	}()
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
	tr, err := c.cfg.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{c.cfg.Audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("minting a token for service account %s/%s: %w", ns, sa, err)
	}
	if tr.Status.Token == "" {
		return "", fmt.Errorf("minting a token for service account %s/%s: the TokenRequest returned no token", ns, sa)
	}
	return tr.Status.Token, nil
}

// event records an event on a CofferSecret; messages never hold a value.
func (c *controller) event(u *unstructured.Unstructured, typ, reason, format string, a ...any) {
	if c.recorder != nil {
		c.recorder.Eventf(u, typ, reason, format, a...)
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
