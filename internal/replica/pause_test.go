package replica

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/storage/etcd/etcdtest"
)

// TestPausedProcessRunsNoJobAfterWaking runs a replica in a child process
// (this test binary, re-executed) that runs a job every 50ms while it
// leads and logs each run with its time. The child is stopped with SIGSTOP
// for longer than its lease TTL; a replica in this process takes the
// leadership over; the child is continued with SIGCONT. The child must
// not run the job again: when it wakes, its next tick comes before its
// session has noticed the expired lease, and only the check with etcd
// before each run stops it.
func TestPausedProcessRunsNoJobAfterWaking(t *testing.T) {
	c := etcdtest.Start(t, 1)
	log := t.TempDir() + "/runs"
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "COFFER_REPLICA_CHILD="+c.Endpoint(0), "COFFER_REPLICA_LOG="+log)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	runs := func() []int64 {
		f, err := os.Open(log)
		if err != nil {
			return nil
		}
		defer f.Close()
		var out []int64
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if n, err := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "run "), 10, 64); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	waitFor(t, 30*time.Second, "the child runs the job", func() bool { return len(runs()) >= 5 })

	cli := newClient(t, c.Endpoint(0))
	here, err := NewEtcd(cli, "/coffer-test", Config{ID: "parent", TTL: testTTL})
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	waitFor(t, 10*time.Second, "both members listed", func() bool { return len(members(t, here)) == 2 })
	if here.IsLeader() {
		t.Fatal("the parent leads while the child runs jobs")
	}

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	d := waitFor(t, 5*testTTL, "the parent takes over", here.IsLeader)
	t.Logf("leader paused: the other replica leads after %s (lease TTL %s)", d, testTTL)
	before := len(runs())
	time.Sleep(time.Second) // well past the lease
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woke := time.Now()
	time.Sleep(2 * time.Second) // dozens of the child's ticks
	if !here.IsLeader() || here.Check(context.Background()) != nil {
		t.Fatal("the parent lost the leadership to the woken child")
	}
	rs := runs()
	var after int
	for _, r := range rs {
		if r > woke.UnixNano() {
			after++
		}
	}
	t.Logf("child: %d runs before SIGSTOP (%s), %d after SIGCONT", before, stopped.Format(time.StampMilli), after)
	if after != 0 || len(rs) != before {
		t.Fatalf("the woken child ran the job %d more times while the parent led", len(rs)-before)
	}
}

// TestMain turns this test binary into the child replica of
// TestPausedProcessRunsNoJobAfterWaking when COFFER_REPLICA_CHILD names an
// etcd endpoint; otherwise it runs the tests.
func TestMain(m *testing.M) {
	if endpoint := os.Getenv("COFFER_REPLICA_CHILD"); endpoint != "" {
		if err := runChild(endpoint, os.Getenv("COFFER_REPLICA_LOG")); err != nil {
			fmt.Fprintln(os.Stderr, "child replica:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs the job every 50ms while it leads, logging each run to
// log, until the parent kills it.
func runChild(endpoint, log string) error {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	r, err := NewEtcd(cli, "/coffer-test", Config{ID: "child", TTL: testTTL})
	if err != nil {
		return err
	}
	defer r.Close()
	RunJob(context.Background(), r, 50*time.Millisecond, func(context.Context) error {
		_, err := fmt.Fprintf(f, "run %d\n", time.Now().UnixNano())
		return err
	}, nil)
	return nil
}
