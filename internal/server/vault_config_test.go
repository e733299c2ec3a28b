package server_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/server"
)

// The vault: section of the config places the mounts, and a server whose
// mount collides with Coffer's routes does not start.
func TestVaultConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(p, []byte("vault:\n  transit_mount: crypto\n  kv_mount: kv/prod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := server.LoadConfig(p)
	if err != nil || cfg.Vault.Transit != "crypto" || cfg.Vault.KV != "kv/prod" {
		t.Fatalf("config %+v %v", cfg.Vault, err)
	}
	cfg = server.Config{Vault: server.VaultMounts{KV: "secrets"}}
	cfg.Dev, cfg.Listen, cfg.DevDir = true, "127.0.0.1:0", t.TempDir()
	err = server.Run(context.Background(), cfg, slog.New(slog.DiscardHandler), func(server.Banner) {})
	if err == nil || !strings.Contains(err.Error(), "collides") {
		t.Fatalf("colliding mount: %v", err)
	}
}
