// Package etcd is the storage.Backend for high availability: every replica
// of Coffer keeps its state in one etcd cluster, under a key prefix.
//
// A storage key k is stored at the etcd key Prefix+"/"+k. Values are stored as
// they come: the barrier above this layer has already encrypted them, so etcd
// holds nothing but ciphertext (and the key paths, which name ids, not
// secrets). A key's storage.Entry.Revision is its etcd mod revision, which
// grows on every write and never repeats, also across a delete and re-create.
//
// Get is a linearizable read; List reads pages of keys at one revision; Apply
// is a single etcd transaction whose compares are the ops' IfRevision
// conditions. The backend also implements storage.Watcher with an etcd watch
// that requests progress notifications every Config.ProgressInterval, resumes
// after a lost connection from the last revision it delivered, and reports a
// compacted history with storage.EventReset.
//
// Errors caused by a cluster that does not answer (no endpoint reachable, no
// leader, a request timeout) match ErrUnavailable.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cofferkms/coffer/internal/storage"
)

// Defaults of Config.
const (
	DefaultPrefix           = "/coffer"
	DefaultDialTimeout      = 5 * time.Second
	DefaultRequestTimeout   = 5 * time.Second
	DefaultProgressInterval = 250 * time.Millisecond
	// DefaultMaxTxnOps is etcd's default --max-txn-ops.
	DefaultMaxTxnOps = 128
	// DefaultMaxRequestBytes is etcd's default --max-request-bytes.
	DefaultMaxRequestBytes = 1536 * 1024
)

// listPage is how many keys one range read of List returns.
const listPage = 1000

// ErrUnavailable is matched (with errors.Is) by errors that mean the etcd
// cluster did not answer: no endpoint reachable, no leader, or no answer
// within Config.RequestTimeout. The request may be retried later; a write that
// failed this way may or may not have been applied.
var ErrUnavailable = errors.New("storage unavailable")

// errClosed is returned by every method after Close.
var errClosed = errors.New("etcd: backend is closed")

// TLSConfig configures TLS to etcd. With CertFile and KeyFile the client
// presents a certificate (etcd's --client-cert-auth).
type TLSConfig struct {
	// CAFile verifies the etcd servers; empty: the system roots.
	CAFile   string `json:"ca_file"`
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

func (t TLSConfig) enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Config configures Open.
type Config struct {
	// Endpoints are the client URLs of the etcd members
	// (https://10.0.0.1:2379). At least one is required.
	Endpoints []string
	// Prefix is the etcd key under which everything is stored; default
	// DefaultPrefix. A trailing slash is ignored.
	Prefix string
	TLS    TLSConfig
	// DialTimeout bounds connecting; default DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds each Get, List, Apply and Revision; default
	// DefaultRequestTimeout. When it expires the error matches
	// ErrUnavailable.
	RequestTimeout time.Duration
	// ProgressInterval is how often a watch asks for a progress
	// notification; default DefaultProgressInterval.
	ProgressInterval time.Duration
	// MaxTxnOps and MaxRequestBytes are the cluster's --max-txn-ops and
	// --max-request-bytes; defaults are etcd's. Apply refuses a batch
	// beyond them with an error that says so.
	MaxTxnOps       int
	MaxRequestBytes int
}

// Backend is a storage.Backend and storage.Watcher on an etcd cluster. It is
// safe for concurrent use.
type Backend struct {
	cli    *clientv3.Client
	prefix string // without a trailing slash
	root   string // prefix + "/"
	cfg    Config
	closed atomic.Bool
}

var (
	_ storage.Backend = (*Backend)(nil)
	_ storage.Watcher = (*Backend)(nil)
)

// Open connects to the cluster of cfg and checks that it answers a
// linearizable read within RequestTimeout. A cluster that does not answer
// gives an error matching ErrUnavailable; a bad configuration (no endpoint, a
// TLS file that cannot be read) gives one that says what to fix.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints: set storage.etcd.endpoints to the client URLs of the etcd members")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	prefix := strings.TrimRight(cfg.Prefix, "/")
	if prefix == "" {
		return nil, fmt.Errorf("etcd: prefix %q is the whole keyspace; use a prefix such as %s", cfg.Prefix, DefaultPrefix)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	var tlsCfg *tls.Config
	if cfg.TLS.enabled() {
		var err error
		if tlsCfg, err = loadTLS(cfg.TLS); err != nil {
			return nil, err
		}
	}
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("etcd: endpoint %q: want a URL like https://10.0.0.1:2379", ep)
		}
		if u.Scheme == "http" && tlsCfg != nil {
			return nil, fmt.Errorf("etcd: endpoint %q is plain http but storage.etcd.tls is set; use https://", ep)
		}
		if u.Scheme == "https" && tlsCfg == nil {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
		Context:              context.WithoutCancel(ctx),
		// Allow a request a little beyond the server's limit, so that
		// the server (not the client) has the last word and Apply's own
		// check stays the one users see.
		MaxCallSendMsgSize: cfg.MaxRequestBytes + 64<<10,
	})
	if err != nil {
		return nil, unavailable("connect", err)
	}
	b := &Backend{cli: cli, prefix: prefix, root: prefix + "/", cfg: cfg}
	if _, err := b.Revision(ctx); err != nil {
		cli.Close()
		// The client retries quietly until its deadline; say why.
		if why := diagnose(cfg, tlsCfg); why != "" && errors.Is(err, ErrUnavailable) {
			return nil, fmt.Errorf("%w (%s)", err, why)
		}
		return nil, err
	}
	return b, nil
}

// diagnose connects to each endpoint itself and returns the first reason
// one cannot be used (refused connection, TLS handshake or client
// certificate refused), or "" when every endpoint accepts a connection.
func diagnose(cfg Config, tlsCfg *tls.Config) string {
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			continue
		}
		conn, err := net.DialTimeout("tcp", u.Host, cfg.DialTimeout)
		if err != nil {
			return fmt.Sprintf("endpoint %s: %v", ep, err)
		}
		if u.Scheme != "https" || tlsCfg == nil {
			conn.Close()
			continue
		}
		c := tlsCfg.Clone()
		c.ServerName = u.Hostname()
		c.NextProtos = []string{"h2"}
		tc := tls.Client(conn, c)
		tc.SetDeadline(time.Now().Add(cfg.DialTimeout))
		err = tc.Handshake()
		if err == nil {
			// With TLS 1.3 a refused client certificate arrives as an
			// alert after the handshake: wait briefly for one.
			tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			var one [1]byte
			if _, rerr := tc.Read(one[:]); rerr != nil {
				var ne net.Error
				if !errors.As(rerr, &ne) || !ne.Timeout() {
					err = rerr
				}
			}
		}
		tc.Close()
		if err != nil {
			return fmt.Sprintf("endpoint %s: TLS: %v; check storage.etcd.tls", ep, err)
		}
	}
	return ""
}

func loadTLS(t TLSConfig) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd: tls.ca_file %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("etcd: tls.cert_file and tls.key_file go together: set both for client-certificate authentication, or neither")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Client returns the etcd client, for code that needs more than key-value
// storage (leases, elections). Keys it writes belong under Prefix().
func (b *Backend) Client() *clientv3.Client { return b.cli }

// Prefix returns the etcd key prefix of this backend, without a trailing
// slash; storage key k is stored at Prefix()+"/"+k.
func (b *Backend) Prefix() string { return b.prefix }

// Close closes the client; every later call fails and open watches end.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	return b.cli.Close()
}

// reqCtx bounds one request by RequestTimeout.
func (b *Backend) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.RequestTimeout)
}

// fail turns an error of the client into what callers test for: the caller's
// own ctx error when its ctx ended, errClosed after Close, ErrUnavailable
// when the cluster did not answer.
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if b.closed.Load() {
		return errClosed
	}
	if isUnavailable(err) {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: etcd did not answer a %s within %s", ErrUnavailable, op, b.cfg.RequestTimeout)
		}
		return unavailable(op, err)
	}
	return fmt.Errorf("etcd %s: %w", op, err)
}

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: etcd %s: %v", ErrUnavailable, op, err)
}

// isUnavailable reports whether err means "the cluster did not answer"
// rather than "the cluster refused".
func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var code codes.Code
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

func (b *Backend) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return errClosed
	}
	return nil
}

// Get returns the entry at key, or storage.ErrNotFound. The read is
// linearizable: it sees every write acknowledged before it started.
func (b *Backend) Get(ctx context.Context, key string) (storage.Entry, error) {
	if err := b.check(ctx); err != nil {
		return storage.Entry{}, err
	}
	if key == "" {
		return storage.Entry{}, errors.New("etcd: empty key")
	}
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	resp, err := b.cli.Get(rctx, b.root+key)
	if err != nil {
		return storage.Entry{}, b.fail(ctx, "get", err)
	}
	if len(resp.Kvs) == 0 {
		return storage.Entry{}, storage.ErrNotFound
	}
	kv := resp.Kvs[0]
	// The client's response is not shared: Value is ours to hand out.
	return storage.Entry{Key: key, Value: kv.Value, Revision: kv.ModRevision}, nil
}

// List returns the keys that start with prefix, in lexical order. It reads
// pages of keys, all at the revision of the first page, so the result is one
// consistent view however many keys there are.
func (b *Backend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		keys, err := b.list(ctx, prefix)
		// A compaction between two pages loses the first page's
		// revision; start again at the current one.
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 3 {
			continue
		}
		return keys, err
	}
}

func (b *Backend) list(ctx context.Context, prefix string) ([]string, error) {
	from := b.root + prefix
	end := clientv3.GetPrefixRangeEnd(from)
	var keys []string
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(listPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := b.reqCtx(ctx)
		resp, err := b.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil, err
			}
			return nil, b.fail(ctx, "list", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key[len(b.root):]))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return keys, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Revision returns the cluster's current revision (the header of a
// linearizable read).
func (b *Backend) Revision(ctx context.Context) (int64, error) {
	if err := b.check(ctx); err != nil {
		return 0, err
	}
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	resp, err := b.cli.Get(rctx, b.root, clientv3.WithCountOnly())
	if err != nil {
		return 0, b.fail(ctx, "read", err)
	}
	return resp.Header.Revision, nil
}

// Apply writes ops as one etcd transaction: IfRevision n > 0 compares the
// key's mod revision with n, 0 requires that the key does not exist (create
// revision 0), AnyRevision compares nothing. If a compare fails nothing is
// written and the error matches storage.ErrConflict. A batch beyond the
// cluster's limits (MaxTxnOps writes or compares, MaxRequestBytes) is
// refused before it is sent.
func (b *Backend) Apply(ctx context.Context, ops ...storage.Op) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	var (
		cmps   []clientv3.Cmp
		writes []clientv3.Op
		size   int
	)
	written := make(map[string]bool, len(ops))
	for _, op := range ops {
		if err := op.Validate(); err != nil {
			return err
		}
		key := b.root + op.Key
		// Roughly what the key costs in the raft entry: protobuf framing
		// of a few bytes per field, a little more for compares.
		switch {
		case op.IfRevision == 0:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			size += len(key) + 16
		case op.IfRevision > 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", op.IfRevision))
			size += len(key) + 16
		}
		if op.Kind == storage.OpCheck {
			continue
		}
		if written[op.Key] {
			return fmt.Errorf("etcd: key %q is written twice in one batch; etcd refuses that, write each key once", op.Key)
		}
		written[op.Key] = true
		switch op.Kind {
		case storage.OpPut:
			// The client copies the value into its request: the caller
			// may reuse op.Value once Apply returns.
			writes = append(writes, clientv3.OpPut(key, string(op.Value)))
			size += len(key) + len(op.Value) + 16
		case storage.OpDelete:
			writes = append(writes, clientv3.OpDelete(key))
			size += len(key) + 16
		}
	}
	if len(cmps) == 0 && len(writes) == 0 {
		return nil
	}
	if n := max(len(cmps), len(writes)); n > b.cfg.MaxTxnOps {
		return fmt.Errorf("etcd: a batch of %d writes and %d conditions exceeds the cluster's limit of %d operations per transaction (etcd --max-txn-ops); split the work or raise the limit on etcd and in storage.etcd",
			len(writes), len(cmps), b.cfg.MaxTxnOps)
	}
	// The raft entry adds a header to the request; keep a margin.
	if limit := b.cfg.MaxRequestBytes - 1024; size > limit {
		return fmt.Errorf("etcd: a batch of about %d bytes exceeds the cluster's request limit of %d bytes (etcd --max-request-bytes, less a margin); split the work or raise the limit",
			size, limit)
	}
	rctx, cancel := b.reqCtx(ctx)
	defer cancel()
	resp, err := b.cli.Txn(rctx).If(cmps...).Then(writes...).Commit()
	if err != nil {
		return b.fail(ctx, "transaction", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: a condition of the batch did not hold (another write came first); read again and retry", storage.ErrConflict)
	}
	return nil
}
