package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/etcd"
)

// EtcdConfig is the storage.etcd section of the config: several replicas
// share one etcd cluster (docs/config.md).
type EtcdConfig struct {
	// Endpoints are the etcd members' client URLs.
	Endpoints []string `json:"endpoints"`
	// Prefix is the etcd key everything is stored under (default /coffer).
	Prefix string `json:"prefix"`
	// TLS: ca_file verifies etcd; cert_file and key_file authenticate
	// this replica to etcd (--client-cert-auth).
	TLS etcd.TLSConfig `json:"tls"`
	// DialTimeout bounds connecting (default 5s).
	DialTimeout string `json:"dial_timeout"`
	// RequestTimeout bounds each storage request (default 5s); a request
	// that times out answers 503 storage_unavailable.
	RequestTimeout string `json:"request_timeout"`
	// MaxTxnOps and MaxRequestBytes mirror etcd's --max-txn-ops and
	// --max-request-bytes when the cluster raised them (defaults 128 and
	// 1.5 MiB).
	MaxTxnOps       int `json:"max_txn_ops"`
	MaxRequestBytes int `json:"max_request_bytes"`
}

// backend turns the YAML section into etcd.Config.
func (c *EtcdConfig) backend() (etcd.Config, error) {
	out := etcd.Config{Endpoints: c.Endpoints, Prefix: c.Prefix, TLS: c.TLS, MaxTxnOps: c.MaxTxnOps, MaxRequestBytes: c.MaxRequestBytes}
	for _, d := range []struct {
		name string
		in   string
		out  *time.Duration
	}{{"dial_timeout", c.DialTimeout, &out.DialTimeout}, {"request_timeout", c.RequestTimeout, &out.RequestTimeout}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v <= 0 {
			return out, fmt.Errorf("storage.etcd.%s %q: want a duration like 5s", d.name, d.in)
		}
		*d.out = v
	}
	return out, nil
}

// Bounds of the pause between two attempts to reach etcd at start, and how
// often the wait is logged.
const (
	etcdRetryMin = 500 * time.Millisecond
	etcdRetryMax = 10 * time.Second
	etcdRetryLog = 5 * time.Second
)

// storageChoice is the storage a config selects, and where local files go.
type storageChoice struct {
	boltPath string      // bbolt file, or ""
	etcd     *EtcdConfig // or nil
	// dataDir holds this replica's local files: audit trail, tls-auto
	// certificate, dev unseal share.
	dataDir string
}

// chooseStorage checks that cfg names exactly one storage (storage.path or
// storage.etcd; --dev always uses bbolt at devPath) and where local files go.
func chooseStorage(cfg Config, devPath string) (storageChoice, error) {
	e := cfg.Storage.Etcd
	switch {
	case cfg.Dev && e != nil:
		return storageChoice{}, errors.New("--dev uses a bbolt file of its own; remove storage.etcd from the config (or run without --dev)")
	case cfg.Dev:
		return storageChoice{boltPath: devPath, dataDir: filepath.Dir(devPath)}, nil
	case e != nil && cfg.Storage.Path != "":
		return storageChoice{}, errors.New("storage.path and storage.etcd are both set: choose one (storage.path for a single server on a bbolt file, storage.etcd for replicas sharing an etcd cluster)")
	case e == nil && cfg.Storage.Path == "":
		return storageChoice{}, errors.New("no storage: set storage.path (a bbolt file, one server) or storage.etcd (replicas sharing an etcd cluster) in the config file (or use --dev)")
	case e != nil:
		if cfg.DataDir == "" {
			return storageChoice{}, errors.New("data_dir is required with storage.etcd: it holds this replica's local files (audit trail, tls.auto certificate); set it to a private directory such as /var/lib/coffer")
		}
		return storageChoice{etcd: e, dataDir: cfg.DataDir}, nil
	}
	dir := cfg.DataDir
	if dir == "" {
		dir = filepath.Dir(cfg.Storage.Path)
	}
	return storageChoice{boltPath: cfg.Storage.Path, dataDir: dir}, nil
}

// describe is the storage line of the banner and the log.
func (c storageChoice) describe() string {
	if c.etcd == nil {
		return c.boltPath
	}
	prefix := c.etcd.Prefix
	if prefix == "" {
		prefix = etcd.DefaultPrefix
	}
	return fmt.Sprintf("etcd %s prefix %s", strings.Join(c.etcd.Endpoints, ","), prefix)
}

// storageOpener opens the chosen storage. prepareStorage checks the
// configuration first, so that a mistake fails before the server listens.
type storageOpener struct {
	c    storageChoice
	ecfg etcd.Config
}

// prepareStorage checks the storage configuration and makes data_dir (with
// etcd: the tls.auto certificate goes there before the storage answers).
func prepareStorage(c storageChoice) (storageOpener, error) {
	o := storageOpener{c: c}
	if c.etcd == nil {
		return o, nil
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return o, fmt.Errorf("data_dir: %w", err)
	}
	var err error
	o.ecfg, err = c.etcd.backend()
	return o, err
}

// waits reports whether opening may wait for a remote store (etcd), so the
// server listens first and answers its probes meanwhile (startGate).
func (o storageOpener) waits() bool { return o.c.etcd != nil }

// open opens the chosen backend. An etcd cluster that does not answer is
// retried with growing pauses (logged at most every few seconds, with the
// reason; each failed attempt is passed to waiting, which may be nil)
// until it answers or ctx ends; then the error is ctx's. A configuration
// mistake fails at once. The second result is the etcd backend itself (nil
// with bbolt), for what needs more than key-value storage (membership, job
// leadership).
func (o storageOpener) open(ctx context.Context, log *slog.Logger, waiting func(error)) (storage.Backend, *etcd.Backend, error) {
	if o.c.etcd == nil {
		b, err := bolt.Open(o.c.boltPath, bolt.Options{})
		if err != nil {
			return nil, nil, err
		}
		return b, nil, nil
	}
	pause := etcdRetryMin
	var logged time.Time
	for {
		b, err := etcd.Open(ctx, o.ecfg)
		if err == nil {
			return b, b, nil
		}
		if !errors.Is(err, etcd.ErrUnavailable) {
			return nil, nil, fmt.Errorf("storage.etcd: %w", err)
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if waiting != nil {
			waiting(err)
		}
		if time.Since(logged) >= etcdRetryLog {
			log.Warn("etcd does not answer; the server waits for it (/readyz answers 503 until it does)", "endpoints", strings.Join(o.ecfg.Endpoints, ","), "error", err, "retry_in", pause)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, etcdRetryMax)
	}
}

// Statuses of /readyz while the server starts (startGate).
const (
	readyWaitingStorage = "waiting for storage"
	readyStarting       = "starting"
)

// startGate is the API listener's handler from the moment it listens:
// until the server is built (storage reached, audit trail open, replica
// joined) it answers the probes itself (/healthz 200, /readyz 503 with the
// reason) and every other request 503; then it hands every request to the
// real handler. What it answers itself is no operation: nothing reaches a
// service, so nothing needs the audit trail, which is not open yet.
type startGate struct {
	api atomic.Pointer[http.Handler]

	mu      sync.Mutex
	status  string    // readyWaitingStorage or readyStarting
	since   time.Time // when the wait began
	lastErr string    // the last attempt's error, while waiting
}

func newStartGate(waitsForStorage bool) *startGate {
	g := &startGate{status: readyStarting, since: time.Now()}
	if waitsForStorage {
		g.status = readyWaitingStorage
	}
	return g
}

// waiting records a failed attempt to reach the storage.
func (g *startGate) waiting(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastErr = err.Error()
}

// reached records that the storage answered; the rest is being built.
func (g *startGate) reached() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.status, g.lastErr = readyStarting, ""
}

// open hands every later request to h.
func (g *startGate) open(h http.Handler) { g.api.Store(&h) }

func (g *startGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.api.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	g.mu.Lock()
	status, since, lastErr := g.status, g.since, g.lastErr
	g.mu.Unlock()
	probe := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case probe && r.URL.Path == "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case probe && r.URL.Path == "/readyz":
		reason := "the storage answered; the server is opening its audit trail and joining the replicas"
		if status == readyWaitingStorage {
			reason = fmt.Sprintf("the storage has not answered since %s (%s)", since.UTC().Format(time.RFC3339), time.Since(since).Round(time.Second))
			if lastErr != "" {
				reason += "; last error: " + boundString(lastErr, 500)
			}
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status, "reason": reason, "since": since.UTC().Format(time.RFC3339)})
	case status == readyWaitingStorage:
		writeJSON(w, http.StatusServiceUnavailable, errorBody("storage_unavailable",
			"the server is still waiting for its storage (etcd) to answer and serves nothing yet; retry later or use another replica (GET /readyz says why)", ""))
	default:
		writeJSON(w, http.StatusServiceUnavailable, errorBody("unavailable", "the server is starting; retry in a moment", ""))
	}
}
