package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/monitor"
	"github.com/cofferkms/coffer/internal/seal"
	"github.com/cofferkms/coffer/internal/server/awskms"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/sys"
)

// Config is the server configuration (coffer.yaml).
type Config struct {
	// Listen is the TCP address of the API, default 127.0.0.1:8200.
	Listen  string `json:"listen"`
	Storage struct {
		// Path is the bbolt file.
		Path string `json:"path"`
		// Etcd stores everything in an etcd cluster shared by replicas
		// instead (storagewire.go); mutually exclusive with Path.
		Etcd *EtcdConfig `json:"etcd"`
	} `json:"storage"`
	// DataDir holds this replica's local files (audit trail, tls.auto
	// certificate); required with storage.etcd, default the directory of
	// storage.path.
	DataDir string `json:"data_dir"`

	TLS struct {
		CertFile string `json:"cert_file"`
		KeyFile  string `json:"key_file"`
		// Auto makes a self-signed certificate at start and writes it
		// next to the storage file as tls-auto-cert.pem.
		Auto bool `json:"auto"`
		// ClientCAFile, when set, asks clients for a certificate and
		// verifies it against these CAs; a verified certificate can log in
		// to roles that trust it (POST /v1/auth/cert/login).
		ClientCAFile string `json:"client_ca_file"`
	} `json:"tls"`
	// RotationCheckInterval is how often due rotations and deletions run
	// (default 1m).
	RotationCheckInterval string `json:"rotation_check_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
	// Audit configures the audit trail; it is on by default.
	Audit AuditConfig `json:"audit"`
	// Metrics configures /metrics.
	Metrics MetricsConfig `json:"metrics"`
	// HA configures replicas sharing one store (etcd).
	HA HAConfig `json:"ha"`
	// Seal names an auto-unseal (sealwire.go); without it the root key is
	// protected by Shamir unseal shares.
	Seal *SealConfig `json:"seal"`
	// PreviousSeal is the auto-unseal the store is protected by during a
	// migration away from it (coffer operator migrate-seal).
	PreviousSeal *SealConfig `json:"previous_seal"`
	// AWSKMS places the AWS KMS door's keys in an AWS-style account: the
	// partition, region and account of their ARNs and the region clients
	// sign for (docs/aws-kms.md); defaults aws, us-east-1, 000000000000.
	AWSKMS awskms.Config `json:"aws_kms"`
	// Vault places the Vault-compatible API (docs/vault-compat.md):
	// transit_mount (default transit) and kv_mount (default secret).
	Vault VaultMounts `json:"vault"`

	// Dev mode (flags only): initialize and unseal automatically.
	Dev          bool   `json:"-"`
	DevDir       string `json:"-"`
	DevRootToken string `json:"-"`
}

// AuditConfig is the audit: section of the config (docs/audit.md).
type AuditConfig struct {
	// Disabled turns the audit trail off (not recommended; for benchmarks).
	Disabled bool `json:"disabled"`
	// Dir holds the log files; default: "audit" next to the storage file.
	Dir string `json:"dir"`
	// KeyFile is the audit HMAC and signing key; default Dir/audit.key.
	KeyFile string `json:"key_file"`
	// MaxFileSizeMB rotates files at this size (default 100).
	MaxFileSizeMB int `json:"max_file_size_mb"`
	// CheckpointEvery signs a checkpoint every N records (default 1000).
	CheckpointEvery int `json:"checkpoint_every"`
	// CheckpointInterval bounds the unsigned tail in time (default 10s).
	CheckpointInterval string `json:"checkpoint_interval"`
	// Durability is when a request's record is on disk: "per-request"
	// (the default: fsynced before the answer) or "batched": the records
	// of operations that change nothing (encrypt, decrypt, data keys,
	// re-encrypt, random) are answered once written and fsynced within
	// BatchedWindow (docs/audit.md, "Durability").
	Durability string `json:"durability"`
	// BatchedWindow bounds the wait for that fsync (default 10ms, at
	// most 1s); only with Durability "batched".
	BatchedWindow string `json:"batched_window"`
	// Stdout mirrors records to standard output; with NoFile it is the
	// only (required) sink.
	Stdout bool `json:"stdout"`
	NoFile bool `json:"no_file"`
	// Webhook is a best-effort mirror (JSON lines POSTed in batches).
	Webhook string `json:"webhook"`
	// Alerts is a rules file (docs/audit.md); "" runs the built-in rules
	// with their defaults, logging alerts.
	Alerts string `json:"alerts"`
	// AlertsDisabled turns the alert engine off.
	AlertsDisabled bool `json:"alerts_disabled"`
}

// HAConfig is the ha: section of the config: how a replica works beside
// others on a shared store.
type HAConfig struct {
	// ReplicaID names this replica (default: the host name).
	ReplicaID string `json:"replica_id"`
	// AdvertiseAddress is the URL other replicas and operators reach this
	// one at (default: the listen URL).
	AdvertiseAddress string `json:"advertise_address"`
	// FreshnessBound is the longest a replica serves credentials without
	// proof that its caches hold every change made on the others (a
	// revocation above all); default 2s (sys.DefaultFreshnessBound).
	FreshnessBound string `json:"freshness_bound"`
	// LeaseTTL bounds member heartbeats and job leadership (default 10s).
	LeaseTTL string `json:"lease_ttl"`
}

// freshnessBound parses ha.freshness_bound.
func (c HAConfig) freshnessBound() (time.Duration, error) {
	if c.FreshnessBound == "" {
		return sys.DefaultFreshnessBound, nil
	}
	d, err := time.ParseDuration(c.FreshnessBound)
	if err != nil || d < 100*time.Millisecond {
		return 0, fmt.Errorf("ha.freshness_bound %q: want a duration of at least 100ms like 2s", c.FreshnessBound)
	}
	return d, nil
}

// MetricsConfig is the metrics: section of the config.
type MetricsConfig struct {
	// Addr serves /metrics on a separate listener; empty: on the API
	// listener, unauthenticated.
	Addr string `json:"addr"`
	// Disabled removes /metrics.
	Disabled bool `json:"disabled"`
	// MaxKeyLabels bounds the key label (default 200).
	MaxKeyLabels int `json:"max_key_labels"`
}

// LoadConfig reads a YAML config file, rejecting unknown fields.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Banner is what Run reports once the server listens.
type Banner struct {
	Addr        string // URL of the API
	CACertFile  string // self-signed certificate to trust, if any
	Fingerprint string // SHA-256 of that certificate
	StoragePath string
	Temporary   bool   // storage is deleted on exit
	AuditDir    string // empty: audit disabled
	MetricsAddr string // separate metrics listener, if any
	// Dev only.
	RootToken   string
	UnsealShare string
}

// Run serves until ctx ends. ready is called once with the banner.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, ready func(Banner)) error {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8200"
	}
	interval := time.Minute
	if cfg.RotationCheckInterval != "" {
		d, err := time.ParseDuration(cfg.RotationCheckInterval)
		if err != nil || d <= 0 {
			return fmt.Errorf("rotation_check_interval %q: want a duration like 1m", cfg.RotationCheckInterval)
		}
		interval = d
	}
	var ban Banner
	path := cfg.Storage.Path
	if cfg.Dev {
		dir := cfg.DevDir
		if dir == "" {
			d, err := os.MkdirTemp("", "coffer-dev-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			dir, ban.Temporary = d, true
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		path = filepath.Join(dir, "coffer.db")
	}
	// Storage selection (storagewire.go): bbolt or etcd, and the
	// directory of local files, which path stands for from here on.
	where, err := chooseStorage(cfg, path)
	if err != nil {
		return err
	}
	path = filepath.Join(where.dataDir, "coffer.db")
	ban.StoragePath = where.describe()
	useTLS := cfg.TLS.Auto || cfg.TLS.CertFile != ""
	if cfg.Dev && !useTLS && !isLoopback(cfg.Listen) {
		return fmt.Errorf("dev mode without TLS listens only on loopback; %q is not loopback (add --tls-auto or use 127.0.0.1)", cfg.Listen)
	}
	if !useTLS && cfg.TLS.ClientCAFile != "" {
		return errors.New("tls.client_ca_file needs TLS (tls.cert_file or tls.auto)")
	}
	bound, err := cfg.HA.freshnessBound()
	if err != nil {
		return err
	}
	// The seals are built (and their configuration checked) before
	// anything listens; they reach their device only when used.
	curSeal, prevSeal, err := openSeals(cfg)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range []seal.Seal{curSeal, prevSeal} {
			if s != nil {
				s.Close()
			}
		}
	}()
	opener, err := prepareStorage(where)
	if err != nil {
		return err
	}

	// A bbolt file opens at once (a mistake fails before listening). etcd
	// is reached after the listener is up: meanwhile the start gate
	// answers the probes and refuses the rest (storagewire.go).
	var store storage.Backend
	var etcdStore *etcd.Backend // nil with bbolt: membership and job leadership need more than key-value storage
	defer func() {
		if store != nil {
			store.Close()
		}
	}()
	if !opener.waits() {
		if store, _, err = opener.open(ctx, logger, nil); err != nil {
			return err
		}
	}

	// The listener, with its TLS, comes up before anything waits, so that
	// probes reach it; the gate serves until the server is built.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	scheme, tlsCfg, err := serverTLS(cfg, useTLS, ln, filepath.Dir(path), &ban)
	if err != nil {
		ln.Close()
		return err
	}
	ban.Addr = scheme + "://" + ln.Addr().String()
	gate := newStartGate(opener.waits())
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if useTLS {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	// Handlers still running when a graceful shutdown gives up are waited
	// for (below) so their outcome records reach the trail before it
	// closes.
	var inflight atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Add(-1)
		gate.ServeHTTP(w, r)
	})
	hs := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// On every early return (the gate still serving); after a graceful
	// shutdown below it does nothing.
	defer hs.Close()
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()

	if opener.waits() {
		logger.Info("coffer server listening while it reaches its storage; /readyz answers 503 until it is ready", "addr", ban.Addr, "storage", ban.StoragePath)
		store, etcdStore, err = opener.open(ctx, logger, gate.waiting)
		if err != nil {
			if ctx.Err() != nil {
				logger.Info("stopped while waiting for storage", "storage", ban.StoragePath)
				return nil
			}
			return err
		}
		gate.reached()
	}
	var backend storage.Backend = store
	var s *sys.Sys
	var metrics *monitor.Metrics
	if !cfg.Metrics.Disabled {
		metrics = monitor.NewMetrics(cfg.Metrics.MaxKeyLabels, func() monitor.State { return sysState(s) })
		backend = monitor.Timed(store, metrics)
	}
	bar := barrier.New(backend)
	bar.ConfigureSeal(curSeal, prevSeal)
	s = sys.New(bar, nil)
	// HA: a shared store's changes made by other replicas reach this
	// one's caches through its watch (internal/sys, follow.go).
	if w, ok := backend.(storage.Watcher); ok {
		s.Follow(w, bound, logger)
	}
	defer s.Seal()

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	trail, akeys, err := openAudit(bg, cfg, path, logger, metrics)
	if err != nil {
		return err
	}
	// Background work (alerts, key maintenance, sweeps) records to the
	// trail: it stops, and is waited for, before the trail closes.
	var bgWG sync.WaitGroup
	if trail != nil {
		defer func() {
			stopBG()
			bgWG.Wait()
			trail.Close()
		}()
		ban.AuditDir = auditDir(cfg, path)
	}
	var rec audit.Recorder = audit.Nop{}
	if trail != nil {
		rec = trail
	}
	var engine *monitor.Engine
	if !cfg.Audit.AlertsDisabled {
		engine, err = startAlerts(bg, &bgWG, cfg, s, rec, logger, metrics)
		if err != nil {
			return err
		}
	}

	if cfg.Dev {
		shareFile := filepath.Join(filepath.Dir(path), "dev-unseal-share")
		prev, _ := os.ReadFile(shareFile)
		share, tok, err := s.DevBootstrap(ctx, strings.TrimSpace(string(prev)), cfg.DevRootToken)
		if err != nil {
			return fmt.Errorf("dev bootstrap: %w", err)
		}
		if err := writeFileSync(shareFile, []byte(share+"\n"), 0o600); err != nil {
			return err
		}
		ban.RootToken, ban.UnsealShare = tok, share
		// Dev bootstrap bypasses the API; record it like an init/unseal.
		if err := rec.Record(ctx, &audit.Record{Type: audit.TypeEvent, Time: time.Now().UTC(), Door: "dev", Action: "sys:DevBootstrap",
			Principal: audit.Principal{Kind: "system", ID: "dev-mode"}, Outcome: "ok"}); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}

	// Membership and job leadership (replicawire.go): on etcd this
	// replica's record and campaign; on bbolt the only, leading, member.
	// Closed (the lease revoked, the leadership handed over at once)
	// before the background jobs are waited for.
	var shared sharedStore
	if etcdStore != nil {
		shared = etcdStore
	}
	rep, err := startReplica(cfg, shared, s, ban.Addr, logger)
	if err != nil {
		return err
	}
	defer rep.Close()
	opts := Options{Logger: logger, Audit: rec, Metrics: metrics, MetricsSeparate: cfg.Metrics.Addr != "", Alerts: engine, Replica: rep,
		AWSKMS: cfg.AWSKMS, Vault: cfg.Vault}
	if akeys != nil {
		opts.AuditKeys = akeys
	}
	api := New(s, opts)
	if err := api.Err(); err != nil {
		return err
	}
	api.ServeSnapshots(store) // GET /v1/sys/storage/snapshot (snapshot.go): the raw store, not the metrics wrapper
	// A graceful shutdown ends the secret long-polls at once (secrets_wait.go).
	hs.RegisterOnShutdown(api.EndWaits)
	if metrics != nil && cfg.Metrics.Addr != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(mln)
		defer ms.Close()
		ban.MetricsAddr = "http://" + mln.Addr().String() + "/metrics"
	}

	// Background jobs: rotation, deletion, token sweeps and key alerts on
	// the job leader only; access-key use flushes everywhere (replicawire.go).
	startJobs(bg, &bgWG, rep, s, interval, engine, logger)
	// The auto-unseal keeps this replica unsealed through its seal; each
	// replica unseals itself. Every attempt is audited.
	if curSeal != nil {
		s.OnAutoUnseal = func(ctx context.Context, err error) error {
			r := &audit.Record{Type: audit.TypeEvent, Time: time.Now().UTC(), Door: "seal", Action: "sys:AutoUnseal",
				Principal: audit.Principal{Kind: "system", ID: curSeal.Type()}, Outcome: "ok"}
			if err != nil {
				r.Outcome, r.ErrorCode, r.Detail = "error", "seal_unavailable", boundString(err.Error(), maxMessage)
			}
			if err := rec.Record(ctx, r); err != nil {
				return err
			}
			if engine != nil && !engine.Feed(r) && metrics != nil {
				metrics.Dropped("alert_engine", 1)
			}
			return nil
		}
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			s.RunAutoUnseal(bg, logger)
		}()
	}

	// From here on the listener serves the API.
	gate.open(api)
	logger.Info("coffer server listening", "addr", ban.Addr, "storage", ban.StoragePath, "dev", cfg.Dev)
	if ready != nil {
		ready(ban)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(shut); err != nil {
		hs.Close()
		for wait := time.Now().Add(30 * time.Second); inflight.Load() > 0 && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := inflight.Load(); n > 0 {
			logger.Error("shutting down with requests still running; their outcome records may be refused", "requests", n)
		}
		return err
	}
	return nil
}

// serverTLS returns the scheme and the TLS configuration of the API
// listener ln (nil without TLS); a tls.auto certificate is written to dir
// and reported in ban.
func serverTLS(cfg Config, useTLS bool, ln net.Listener, dir string, ban *Banner) (string, *tls.Config, error) {
	if !useTLS {
		return "http", nil, nil
	}
	var cert tls.Certificate
	var err error
	if cfg.TLS.Auto {
		certFile := filepath.Join(dir, "tls-auto-cert.pem")
		cert, ban.Fingerprint, err = selfSigned(ln.Addr().(*net.TCPAddr).IP, certFile)
		ban.CACertFile = certFile
	} else {
		cert, err = tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	}
	if err != nil {
		return "", nil, fmt.Errorf("TLS: %w", err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.ClientCAFile)
		if err != nil {
			return "", nil, fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, fmt.Errorf("TLS client CA: %s holds no PEM certificate", cfg.TLS.ClientCAFile)
		}
		tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return "https", tlsCfg, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// selfSigned makes an ECDSA P-256 certificate for loopback names (and ip),
// writes it (not its key) to certFile for clients to trust, and returns it
// with its SHA-256 fingerprint.
func selfSigned(ip net.IP, certFile string) (tls.Certificate, string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "coffer self-signed"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if host != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	if ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(der)
	if err := writeFileSync(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, hex.EncodeToString(sum[:]), nil
}

// writeFileSync writes a file atomically (temp file, fsync, rename).
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
