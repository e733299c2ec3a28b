package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/monitor"
	"github.com/cofferkms/coffer/internal/replica"
	"github.com/cofferkms/coffer/internal/sys"
)

// sharedStore is what membership and job leadership need of a store
// shared by replicas: the etcd backend's client and key prefix.
type sharedStore interface {
	Client() *clientv3.Client
	Prefix() string
}

// leaseTTL parses ha.lease_ttl.
func (c HAConfig) leaseTTL() (time.Duration, error) {
	if c.LeaseTTL == "" {
		return replica.DefaultTTL, nil
	}
	d, err := time.ParseDuration(c.LeaseTTL)
	if err != nil || d < 2*time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("ha.lease_ttl %q: want whole seconds, at least 2s, like 10s (etcd leases count in seconds)", c.LeaseTTL)
	}
	return d, nil
}

// startReplica starts this process's membership and job leadership: on a
// shared store (shared not nil) a replica.Etcd that publishes its record
// and campaigns, otherwise the single-node replica, always the leader.
// listenURL is the default advertised address.
func startReplica(cfg Config, shared sharedStore, s *sys.Sys, listenURL string, log *slog.Logger) (replica.Replica, error) {
	ttl, err := cfg.HA.leaseTTL()
	if err != nil {
		return nil, err
	}
	id := cfg.HA.ReplicaID
	if id == "" {
		if id, err = os.Hostname(); err != nil || id == "" {
			return nil, fmt.Errorf("ha.replica_id is not set and the host name cannot be read (%v): set ha.replica_id", err)
		}
	}
	addr := cfg.HA.AdvertiseAddress
	if addr == "" {
		addr = listenURL
	}
	if shared == nil {
		return singleReplica(s, id, addr), nil
	}
	r, err := replica.NewEtcd(shared.Client(), shared.Prefix(), replica.Config{ID: id, Address: addr, Version: sys.Version,
		Sealed: s.Barrier.Sealed, TTL: ttl,
		OnError: func(err error) { log.Warn("replica membership (retrying)", "replica", id, "error", err) }})
	if err != nil {
		return nil, err
	}
	log.Info("replica started", "replica", id, "address", addr, "lease_ttl", ttl)
	return r, nil
}

// startJobs starts the background jobs. Automatic key rotation and
// deletion (every interval), token expiry sweeps and the key-state alert
// rules (every minute) run only on the replica holding the job
// leadership, each run under the leadership's context and after the
// leadership was confirmed with the store (replica.RunJob); the key
// service also writes every rotation and deletion with compare-and-swap,
// so a deposed leader's late write fails. Access-key last-use flushes run
// on every replica: each stores what it observed.
func startJobs(ctx context.Context, wg *sync.WaitGroup, rep replica.Replica, s *sys.Sys, interval time.Duration, engine *monitor.Engine, log *slog.Logger) {
	onErr := func(job string) func(error) {
		return func(err error) {
			if errors.Is(err, replica.ErrNotLeader) {
				log.Warn(job+" skipped: the job leadership was lost", "error", err)
				return
			}
			log.Error(job, "error", err)
		}
	}
	unsealed := func(job func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			if s.Barrier.Sealed() {
				return nil
			}
			return job(ctx)
		}
	}
	wg.Go(func() {
		replica.RunJob(ctx, rep, interval, unsealed(func(ctx context.Context) error {
			_, _, err := s.Keys.Tick(ctx)
			return err
		}), onErr("key maintenance"))
	})
	wg.Go(func() {
		replica.RunJob(ctx, rep, time.Minute, unsealed(s.Tokens.Sweep), onErr("token sweep"))
	})
	wg.Go(func() {
		replica.RunJob(ctx, rep, interval, unsealed(func(ctx context.Context) error {
			_, err := s.Secrets.Purge(ctx)
			return err
		}), onErr("secret purge"))
	})
	wg.Go(func() {
		replica.RunJob(ctx, rep, time.Minute, unsealed(func(ctx context.Context) error {
			_, err := s.Secrets.RotateDue(ctx)
			return err
		}), onErr("secret rotation"))
	})
	if engine != nil {
		wg.Go(func() {
			replica.RunJob(ctx, rep, time.Minute, unsealed(func(ctx context.Context) error {
				engine.CheckKeys(ctx, keyStates(s), time.Now())
				return nil
			}), onErr("key alert rules"))
		})
	}
	wg.Go(func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !s.Barrier.Sealed() {
					if err := s.IAM.FlushUsage(ctx); err != nil {
						log.Error("storing access key last use", "error", err)
					}
				}
			}
		}
	})
}
