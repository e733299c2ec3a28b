package ha

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/loadgen"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/cofferkms/coffer/test/rawapi"
)

// BenchmarkHAThroughput measures what
// bench/ha-throughput.sh reports: encrypt and decrypt ops/s on one replica
// on etcd against one on bbolt in the same run, aggregate encrypt ops/s
// with 1, 2 and 3 replicas behind a client that spreads the load, with the
// CPU each replica used, and key creation and token issue throughput on
// etcd against bbolt. One pass takes minutes: run it with -benchtime 1x.
func BenchmarkHAThroughput(b *testing.B) {
	var t testing.TB = b
	dur := envDuration("DURATION", 10*time.Second)
	conc := envInt("CONCURRENCY", 32)
	proc.CofferBin(t)
	etcd := startEtcdCluster(t, 3)
	opts := clusterOptions{AuditDisabled: os.Getenv("AUDIT") != "on"}
	bolt := startCoffer(t, nil, 1, opts)
	ha := startCoffer(t, etcd, 3, opts)
	report := &strings.Builder{}
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		t.Log(line)
		fmt.Fprintln(report, line)
	}
	say("settings: duration %s per run, %d workers, audit %v, etcd: 3 members on loopback (binary %s), machine: %d CPUs",
		dur, conc, !opts.AuditDisabled, etcd.Bin(), numCPU())

	// One replica: etcd against bbolt, alternated twice to cancel drift.
	boltKey := benchKey(t, bolt.replicas[0])
	haKey := benchKey(t, ha.replicas[0])
	for _, op := range []loadgen.Op{loadgen.OpEncrypt, loadgen.OpDecrypt} {
		var b, e []float64
		for round := 0; round < 2; round++ {
			rb, _ := runLoad(t, []*replica{bolt.replicas[0]}, bolt.root, boltKey, op, conc, dur)
			re, _ := runLoad(t, []*replica{ha.replicas[0]}, ha.root, haKey, op, conc, dur)
			b, e = append(b, rb), append(e, re)
		}
		say("%-8s one replica: bbolt %.0f ops/s, etcd %.0f ops/s, ratio etcd/bbolt %.2f (rounds: bbolt %v, etcd %v)",
			op, mean(b), mean(e), mean(e)/mean(b), rounded(b), rounded(e))
	}

	// Aggregate encrypt with 1, 2 and 3 replicas; the workers are spread
	// evenly over them.
	var single float64
	for n := 1; n <= 3; n++ {
		ops, cpu := runLoad(t, ha.replicas[:n], ha.root, haKey, loadgen.OpEncrypt, conc, dur)
		if n == 1 {
			single = ops
		}
		var parts []string
		total := 0.0
		for i, c := range cpu {
			parts = append(parts, fmt.Sprintf("%s %.2f", ha.replicas[i].id, c))
			total += c
		}
		say("encrypt over %d replica(s): %.0f ops/s (x%.2f of one), replica CPU (cores): %s; %.0f ops per CPU-second; efficiency per replica %.2f",
			n, ops, ops/single, strings.Join(parts, ", "), ops/total, ops/single/float64(n))
	}

	// Writes: key creation and token issue, etcd against bbolt.
	for _, w := range []struct{ name, path string }{{"key create", "/v1/keys"}, {"token issue", "/v1/auth/token/create"}} {
		in := func() any {
			if w.path == "/v1/keys" {
				return client.CreateKeyRequest{Description: "ha bench"}
			}
			return client.CreateTokenRequest{TTL: "10m", DisplayName: "ha bench"}
		}
		rb, fb := runWrites(t, bolt.replicas[0], bolt.root, w.path, in, conc, dur/2)
		re, fe := runWrites(t, ha.replicas[0], ha.root, w.path, in, conc, dur/2)
		say("%-11s one replica: bbolt %.0f/s, etcd %.0f/s, ratio etcd/bbolt %.2f (failed: bbolt %s, etcd %s)", w.name, rb, re, re/rb, fb, fe)
	}
	if p := os.Getenv("HA_BENCH_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// benchKey creates a key on r and waits until every replica of its cluster
// can use it.
func benchKey(t testing.TB, r *replica) string {
	var k client.Key
	r.api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Description: "ha bench"}, &k)
	return k.ID
}

// runLoad runs loadgen against each replica at once, conc workers in all,
// and returns the summed ops/s and each replica's CPU in cores.
func runLoad(t testing.TB, rs []*replica, token, key string, op loadgen.Op, conc int, dur time.Duration) (float64, []float64) {
	t.Helper()
	// Every replica serves the key before the measure.
	for _, r := range rs {
		r.api.Eventually(t, patience(), "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: key, Plaintext: []byte("w")}, nil)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total float64
		errs  []string
	)
	before := make([]float64, len(rs))
	for i, r := range rs {
		before[i] = cpuSeconds(r.p.Pid())
	}
	began := time.Now()
	for i, r := range rs {
		c := conc / len(rs)
		if i < conc%len(rs) {
			c++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := loadgen.Run(context.Background(), loadgen.Config{
				Target: r.addr, Token: token, Op: op, KeyID: key, PayloadSize: 32,
				Concurrency: c, Duration: dur, Warmup: time.Second,
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			if res.Errors > 0 {
				errs = append(errs, fmt.Sprintf("%s: %d errors, first: %s", r.id, res.Errors, res.FirstError))
			}
			total += res.OpsPerSec
		}()
	}
	wg.Wait()
	wall := time.Since(began).Seconds()
	if len(errs) > 0 {
		t.Fatalf("load on %d replica(s): %v", len(rs), errs)
	}
	cpu := make([]float64, len(rs))
	for i, r := range rs {
		cpu[i] = (cpuSeconds(r.p.Pid()) - before[i]) / wall
	}
	return total, cpu
}

// runWrites posts in() to path from conc workers for dur and returns the
// acknowledged writes per second and a summary of the failures.
func runWrites(t testing.TB, r *replica, token, path string, in func() any, conc int, dur time.Duration) (float64, string) {
	t.Helper()
	api := rawapi.New(rawapi.At(r.addr), token)
	var ok, failed atomic.Int64
	var first atomic.Value
	deadline := time.Now().Add(dur)
	began := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := api.Do(context.Background(), "POST", path, in(), nil); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	rate := float64(ok.Load()) / time.Since(began).Seconds()
	if failed.Load() == 0 {
		return rate, "none"
	}
	return rate, fmt.Sprintf("%d of %d, first: %.160s", failed.Load(), failed.Load()+ok.Load(), first.Load())
}

// cpuSeconds is the user and system CPU a process used so far, from
// /proc/PID/stat (in USER_HZ ticks, 100 on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func rounded(xs []float64) []int {
	var out []int
	for _, x := range xs {
		out = append(out, int(x+0.5))
	}
	return out
}
