package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/internal/server"
)

// newServerCmd builds `coffer server`.
func newServerCmd() *cobra.Command {
	var (
		cfgPath  string
		cfg      server.Config
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Coffer server",
		Long: `Run the Coffer server.

With --dev it starts at once on a temporary embedded store (or --dev-dir),
initialized and unsealed, and prints the root token: for trying Coffer, never
for real data. Otherwise it reads --config and starts sealed; initialize it
once with 'coffer operator init' and unseal it with 'coffer operator unseal'.`,
		Example: `  coffer server --dev
  coffer server --config /etc/coffer/coffer.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			run := cfg
			if cfgPath != "" {
				fileCfg, err := server.LoadConfig(cfgPath)
				if err != nil {
					return err
				}
				// Flags given on the command line win over the file.
				if cmd.Flags().Changed("listen") {
					fileCfg.Listen = cfg.Listen
				}
				if cmd.Flags().Changed("tls-auto") {
					fileCfg.TLS.Auto = cfg.TLS.Auto
				}
				fileCfg.Dev, fileCfg.DevDir, fileCfg.DevRootToken = cfg.Dev, cfg.DevDir, cfg.DevRootToken
				run = fileCfg
			} else if !cfg.Dev {
				return usageErrorf("give --config FILE for a real server, or --dev to try Coffer")
			}
			if logLevel != "" {
				run.LogLevel = logLevel
			}
			var lvl slog.Level
			if run.LogLevel != "" {
				if err := lvl.UnmarshalText([]byte(run.LogLevel)); err != nil {
					return usageErrorf("--log-level %q: want debug, info, warn or error", run.LogLevel)
				}
			}
			if err := checkStorageDir(run); err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return server.Run(ctx, run, logger, func(b server.Banner) { printBanner(cmd.OutOrStdout(), run, b) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "YAML configuration file")
	f.BoolVar(&cfg.Dev, "dev", false, "development mode: temporary store, initialized and unsealed")
	f.StringVar(&cfg.DevDir, "dev-dir", "", "dev mode: keep the store in this directory instead of a temporary one")
	f.StringVar(&cfg.DevRootToken, "dev-root-token", "", "dev mode: use this value as the root token")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8200", "address to listen on (port 0 picks a free one)")
	f.BoolVar(&cfg.TLS.Auto, "tls-auto", false, "serve TLS with a self-signed certificate made at start")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "TLS certificate file (PEM)")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "TLS private key file (PEM)")
	f.StringVar(&cfg.RotationCheckInterval, "rotation-check-interval", "", "how often due key rotations and deletions run (default 1m)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error")
	return cmd
}

// checkStorageDir says how to create a production server's storage
// directory when it is missing, instead of the bare "no such file or
// directory" of opening the file in it.
func checkStorageDir(cfg server.Config) error {
	if cfg.Dev || cfg.Storage.Path == "" {
		return nil
	}
	dir := filepath.Dir(cfg.Storage.Path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the storage directory %s does not exist: create it, private to the user that runs coffer, with\n  mkdir -p -m 700 %s\nand start the server again (storage.path is %s)", dir, shellQuote(dir), cfg.Storage.Path)
	case err != nil:
		return fmt.Errorf("storage directory: %w", err)
	case !st.IsDir():
		return fmt.Errorf("storage.path %s: %s is not a directory", cfg.Storage.Path, dir)
	}
	return nil
}

func printBanner(w io.Writer, cfg server.Config, b server.Banner) {
	fmt.Fprintf(w, "Coffer server listening on %s\n", b.Addr)
	fmt.Fprintf(w, "Address: %s\n", b.Addr)
	if b.CACertFile != "" {
		fmt.Fprintf(w, "TLS certificate: %s (SHA-256 fingerprint %s)\n", b.CACertFile, b.Fingerprint)
	}
	if b.AuditDir != "" {
		fmt.Fprintf(w, "Audit log: %s\n", b.AuditDir)
	}
	if !cfg.Dev {
		fmt.Fprintf(w, "Storage: %s\n", b.StoragePath)
		fmt.Fprintln(w, "The server starts sealed: 'coffer operator init' once, then 'coffer operator unseal'.")
		return
	}
	where := b.StoragePath
	if b.Temporary {
		where += " (temporary, deleted on exit)"
	}
	fmt.Fprintf(w, `
WARNING: dev mode. The server is initialized and unsealed and its secrets are
printed below. Never use it for real data.

Storage:      %s
Unseal share: %s
Root token:   %s

Try this:
`, where, b.UnsealShare, b.RootToken)
	exp := fmt.Sprintf("export COFFER_ADDR=%s COFFER_TOKEN=%s", b.Addr, b.RootToken)
	if b.CACertFile != "" {
		exp += " COFFER_CACERT=" + b.CACertFile
	}
	fmt.Fprintf(w, "  %s\n", exp)
	fmt.Fprintln(w, "  coffer key create --alias alias/demo")
	fmt.Fprintln(w, "  coffer kms encrypt --key alias/demo --plaintext 'hello, coffer'")
	if f, ok := w.(interface{ Sync() error }); ok {
		f.Sync()
	}
}
