package monitor

import (
	"github.com/cofferkms/coffer/internal/storage"
)

// Timed wraps b in a TimedBackend. When b also implements storage.Watcher
// (etcd, inmem) the result does too, so code that follows a shared store
// still finds the watch behind the metrics. Watches are not timed: they are
// long-lived streams, not requests.
func Timed(b storage.Backend, m *Metrics) storage.Backend {
	t := TimedBackend{Backend: b, M: m}
	if w, ok := b.(storage.Watcher); ok {
		return timedWatcher{TimedBackend: t, Watcher: w}
	}
	return t
}

// timedWatcher is a TimedBackend whose backend is also a storage.Watcher.
type timedWatcher struct {
	TimedBackend
	storage.Watcher
}
