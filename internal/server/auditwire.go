package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/iam"
	"github.com/cofferkms/coffer/internal/monitor"
	"github.com/cofferkms/coffer/internal/sys"
)

// auditDir is where the audit log lives: audit.dir, or "audit" beside the
// storage file.
func auditDir(cfg Config, storagePath string) string {
	if cfg.Audit.Dir != "" {
		return cfg.Audit.Dir
	}
	return filepath.Join(filepath.Dir(storagePath), "audit")
}

// AuditKeyFile is where the audit key of a configuration lives.
func AuditKeyFile(cfg Config, storagePath string) string {
	if cfg.Audit.KeyFile != "" {
		return cfg.Audit.KeyFile
	}
	return filepath.Join(auditDir(cfg, storagePath), "audit.key")
}

// auditReplicaID is the replica id the audit trail carries: ha.replica_id,
// or the host name (docs/audit.md: set it where the host name is not
// stable, or a restart begins a new trail instead of continuing its own).
func auditReplicaID(cfg Config) (string, error) {
	id := cfg.HA.ReplicaID
	if id == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("ha.replica_id is not set and the host name cannot be read (%v): set ha.replica_id", err)
		}
		if err := audit.ValidateReplicaID(h); err != nil {
			return "", fmt.Errorf("ha.replica_id is not set and the host name cannot serve as one: %v; set ha.replica_id", err)
		}
		return h, nil
	}
	if err := audit.ValidateReplicaID(id); err != nil {
		return "", fmt.Errorf("ha.replica_id: %v", err)
	}
	return id, nil
}

// openAudit starts the audit trail of cfg (nil when disabled).
func openAudit(ctx context.Context, cfg Config, storagePath string, log *slog.Logger, m *monitor.Metrics) (*audit.Trail, *audit.Keys, error) {
	a := cfg.Audit
	if a.Disabled {
		log.Warn("the audit trail is disabled: requests are not recorded")
		return nil, nil, nil
	}
	k, err := audit.LoadOrCreateKeys(AuditKeyFile(cfg, storagePath))
	if err != nil {
		return nil, nil, fmt.Errorf("audit key: %w", err)
	}
	replica, err := auditReplicaID(cfg)
	if err != nil {
		return nil, nil, err
	}
	opt := audit.Options{Keys: k, ReplicaID: replica, MaxFileSize: int64(a.MaxFileSizeMB) << 20, CheckpointEvery: a.CheckpointEvery}
	if !a.NoFile {
		opt.Dir = auditDir(cfg, storagePath)
	}
	if a.CheckpointInterval != "" {
		d, err := time.ParseDuration(a.CheckpointInterval)
		if err != nil || d <= 0 {
			return nil, nil, fmt.Errorf("audit.checkpoint_interval %q: want a duration like 10s", a.CheckpointInterval)
		}
		opt.CheckpointInterval = d
	}
	if opt.BatchedSync, err = batchedSync(a); err != nil {
		return nil, nil, err
	}
	if a.Stdout {
		opt.Stdout = os.Stdout
		if m != nil {
			opt.OnStdoutDrop = func(n int) { m.Dropped("audit_stdout", n) }
		}
	}
	if a.Webhook != "" {
		wh := audit.NewWebhook(ctx, a.Webhook, 0)
		if m != nil {
			wh.OnDrop = func(n int) { m.Dropped("audit_webhook", n) }
		}
		opt.Mirrors = append(opt.Mirrors, wh)
	}
	if m != nil {
		opt.Observe = m.ObserveAudit
	}
	t, err := audit.Open(opt)
	if err != nil {
		return nil, nil, fmt.Errorf("audit trail: %w", err)
	}
	if file, n := t.TornTail(); n > 0 {
		log.Warn("the audit log ended in a torn tail (blocks a crash left unwritten); cut it off and continued the chain before it",
			"file", file, "bytes_cut", n)
	}
	if opt.BatchedSync > 0 {
		log.Info("audit durability batched: the records of operations that change nothing are answered before their fsync",
			"batched_window", opt.BatchedSync.String())
	}
	return t, k, nil
}

// startAlerts runs the alert engine over the committed records.
func startAlerts(ctx context.Context, wg *sync.WaitGroup, cfg Config, s *sys.Sys, rec audit.Recorder, log *slog.Logger, m *monitor.Metrics) (*monitor.Engine, error) {
	rules := monitor.DefaultRules()
	if cfg.Audit.Alerts != "" {
		r, err := monitor.LoadRules(cfg.Audit.Alerts)
		if err != nil {
			return nil, err
		}
		rules = r
	}
	var drop func(string, int)
	if m != nil {
		drop = m.Dropped
	}
	sinks := monitor.SinksFor(ctx, rules, log, drop)
	// The automatic response revokes the token (or disables the access
	// key) that triggered the alert, and is itself audited.
	respond := func(ctx context.Context, a monitor.Alert) error {
		ev := &audit.Record{Type: audit.TypeEvent, Time: time.Now().UTC(), Door: "alerts", Action: "alert:RevokeToken",
			Principal: audit.Principal{Kind: "system", ID: "alert-engine"}, Resource: a.Accessor, Detail: a.Rule + ": " + a.Summary}
		key := strings.HasPrefix(a.Accessor, credential.AccessKeyIDPrefix+"_")
		if key {
			ev.Action = "alert:DisableAccessKey"
		}
		// Like every change, recorded before it happens: if the trail
		// cannot write, the credential is left alone (and the alert
		// itself still goes to its sinks).
		intent := *ev
		intent.Phase = audit.PhaseIntent
		if err := rec.Record(ctx, &intent); err != nil {
			log.Error("automatic revocation skipped: the audit trail cannot record it", "accessor", a.Accessor, "error", err)
			return fmt.Errorf("audit trail unavailable: %w", err)
		}
		var err error
		if key {
			off := false
			_, err = s.IAM.UpdateAccessKey(ctx, a.Accessor, iam.UpdateAccessKeyRequest{Enabled: &off})
		} else {
			err = s.Tokens.Revoke(ctx, "", a.Accessor)
		}
		ev.Outcome = "ok"
		if err != nil {
			_, code, _ := classify(err)
			ev.Outcome, ev.ErrorCode = "error", code
		}
		if rerr := rec.Record(context.WithoutCancel(ctx), ev); rerr != nil {
			log.Error("audit record of an automatic revocation failed", "accessor", a.Accessor, "error", rerr)
		}
		return err
	}
	var onAlert func(monitor.Alert)
	if m != nil {
		onAlert = func(a monitor.Alert) { m.Alert(a.Rule) }
	}
	e, err := monitor.NewEngine(rules, sinks, respond, onAlert)
	if err != nil {
		return nil, err
	}
	// The key-state rules (e.CheckKeys) need one evaluator: they run with
	// the background jobs, on the job leader (replicawire.go).
	wg.Go(func() { e.Run(ctx) })
	return e, nil
}

func keyStates(s *sys.Sys) []monitor.KeyState {
	ks := s.Keys.List(context.Background())
	out := make([]monitor.KeyState, 0, len(ks))
	for _, k := range ks {
		st := monitor.KeyState{ID: k.ID, State: string(k.State), LastRotated: k.LastRotatedAt, PendingDeletion: k.DeletionDate != nil,
			RotationPeriod: k.RotationPeriod}
		if st.LastRotated.IsZero() {
			st.LastRotated = k.CreatedAt
		}
		out = append(out, st)
	}
	return out
}

// sysState is what the metrics read at each scrape.
func sysState(s *sys.Sys) monitor.State {
	if s == nil {
		return monitor.State{Sealed: true}
	}
	st := monitor.State{Sealed: s.Barrier.Sealed()}
	if bs, err := s.Barrier.Status(context.Background()); err == nil {
		st.Initialized = bs.Initialized
		st.MigrationPending = bs.Initialized && bs.MigrationPending
	}
	if h := s.SealHealth(); h != nil {
		st.Seal = &monitor.SealState{Type: h.Type, Healthy: h.Healthy, Failing: st.Sealed && h.LastUnsealError != "",
			Failures: h.Failures, UnsealSeconds: h.UnsealDuration.Seconds()}
	}
	if !st.Sealed {
		st.Tokens = s.Tokens.Count()
		st.Keys = keyStates(s)
		st.SecretRotationsOK, st.SecretRotationsFailed, st.SecretRotationsFailing = s.Secrets.RotationCounts()
	}
	return st
}

// DefaultBatchedWindow is audit.batched_window's default.
const DefaultBatchedWindow = 10 * time.Millisecond

// batchedSync is the trail's BatchedSync for the audit: section: zero for
// per-request durability.
func batchedSync(a AuditConfig) (time.Duration, error) {
	switch a.Durability {
	case "", "per-request":
		if a.BatchedWindow != "" {
			return 0, fmt.Errorf("audit.batched_window is set but audit.durability is %q: set durability: batched to use it", cmp.Or(a.Durability, "per-request"))
		}
		return 0, nil
	case "batched":
	default:
		return 0, fmt.Errorf("audit.durability %q: want per-request (the default) or batched", a.Durability)
	}
	if a.BatchedWindow == "" {
		return DefaultBatchedWindow, nil
	}
	d, err := time.ParseDuration(a.BatchedWindow)
	if err != nil || d <= 0 || d > audit.MaxBatchedSync {
		return 0, fmt.Errorf("audit.batched_window %q: want a duration above 0 and at most %v, like 10ms", a.BatchedWindow, audit.MaxBatchedSync)
	}
	return d, nil
}
