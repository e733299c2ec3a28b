package server_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/server"
)

// TestAuditTrailPerReplica: two servers with their own replica ids write
// their trails into one shared audit directory (a shared volume): every
// file and record names its replica, and both trails verify. The id
// defaults to the host name, and an id that could leave the directory is
// refused at start.
func TestAuditTrailPerReplica(t *testing.T) {
	shared := t.TempDir()
	var bans []server.Banner
	var stops []func()
	for _, id := range []string{"coffer-a", "coffer-b"} {
		var cfg server.Config
		cfg.Audit.Dir = shared
		cfg.Audit.AlertsDisabled = true
		cfg.HA.ReplicaID = id
		ban, stop := runServer(t, cfg)
		bans, stops = append(bans, ban), append(stops, stop)
	}
	for _, b := range bans {
		for range 3 {
			if st, body := doJSON(t, "GET", b.Addr+"/v1/keys", b.RootToken, nil); st != 200 {
				t.Fatalf("%d %s", st, body)
			}
		}
	}
	for _, stop := range stops {
		stop()
	}
	res, err := audit.VerifyTrails([]string{shared}, audit.TrailsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Replica != "coffer-a" || res[1].Replica != "coffer-b" {
		t.Fatalf("trails: %+v", res)
	}
	for _, r := range res {
		if r.Problem != nil || r.Format != 3 || r.Records < 4 {
			t.Fatalf("%s: %+v %+v", r.Replica, r.VerifyResult, r.Problem)
		}
		files, _ := audit.ReplicaFiles(shared, r.Replica)
		for _, f := range files {
			if !strings.HasPrefix(filepath.Base(f), "audit-"+r.Replica+"-") {
				t.Fatalf("file %s", f)
			}
			n := 0
			fh, _ := os.Open(f)
			audit.Search(fh, audit.Query{Action: "key:List"}, func(_ []byte, rec *audit.Record) error {
				if rec.Replica != r.Replica {
					t.Fatalf("record of %s in %s's trail", rec.Replica, r.Replica)
				}
				n++
				return nil
			})
			fh.Close()
			if n != 3 {
				t.Fatalf("%s: %d key:List records, want 3", r.Replica, n)
			}
		}
	}

	// Default: the host name.
	host, err := os.Hostname()
	if err != nil || audit.ValidateReplicaID(host) != nil {
		t.Fatalf("this host's name %q cannot serve as a replica id (%v): the default is untestable here", host, err)
	}
	var cfg server.Config
	cfg.Audit.AlertsDisabled = true
	ban, stop := runServer(t, cfg)
	stop()
	if fs, _ := audit.ReplicaFiles(ban.AuditDir, host); len(fs) == 0 {
		t.Fatalf("no trail of replica %q in %s", host, ban.AuditDir)
	}

	// A replica id that could leave the directory is refused.
	cfg.HA.ReplicaID = "../elsewhere"
	cfg.Dev, cfg.Listen, cfg.DevDir = true, "127.0.0.1:0", t.TempDir()
	err = server.Run(context.Background(), cfg, slog.New(slog.DiscardHandler), func(server.Banner) {})
	if err == nil || !strings.Contains(err.Error(), "ha.replica_id") {
		t.Fatalf("bad replica id: %v", err)
	}
}
