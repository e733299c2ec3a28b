package secretsync

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// newInformer is an informer on a resource read through the dynamic
// client, its list and watch limited by labelSelector ("": all), its
// objects passed through transform before they are cached. The informer
// factories of client-go (dynamicinformer, informers) are not used: they
// link every API type's registration into the binary (see elector).
func newInformer(dyn dynamic.Interface, api dynamic.ResourceInterface, labelSelector string, resync time.Duration, transform cache.TransformFunc) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = labelSelector
			return api.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = labelSelector
			return api.Watch(ctx, o)
		},
	}
	// As dynamicinformer does: a client that cannot stream the initial
	// list (the fake of the tests) is listed the classic way.
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, dyn), &unstructured.Unstructured{}, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if err := inf.SetTransform(transform); err != nil {
		// Only possible once the informer has started.
		panic(err)
	}
	return inf
}

// newSecretInformer is the informer on the Secrets the controller
// manages (labelled managed-by coffer-sync) in ns ("": all); its cache
// holds them as *corev1.Secret.
func newSecretInformer(dyn dynamic.Interface, ns string, resync time.Duration) cache.SharedIndexInformer {
	return newInformer(dyn, dyn.Resource(secretsGVR).Namespace(ns), LabelManagedBy+"="+ManagedBy, resync, toSecret)
}

// toSecret is the Secret informer's transform: the Secret read as
// unstructured, typed, without its managedFields. A resync passes the
// cached (already typed) object again.
func toSecret(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		s := &corev1.Secret{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
			return nil, fmt.Errorf("reading Secret %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		obj = s
	}
	return stripManagedFields(obj)
}
