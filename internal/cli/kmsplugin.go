package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/kmsplugin"
)

// newKMSPluginCmd builds `coffer kms-plugin`.
func newKMSPluginCmd() *cobra.Command {
	var (
		listen, key, tokenFile, healthAddr            string
		role, saTokenFile, cluster, certFile, keyFile string
		servers                                       []string
		healthInterval, timeout, attemptTimeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:         "kms-plugin",
		Annotations: map[string]string{annotNoTokenCache: "yes"},
		Short:       "Run the Kubernetes KMS v2 plugin beside a kube-apiserver",
		Long: `Run the Kubernetes KMS v2 plugin on a unix socket. The kube-apiserver's
EncryptionConfiguration points a kms provider (apiVersion v2, name coffer) at
the socket; the plugin wraps the apiserver's seeds with a Coffer key.
See docs/kubernetes.md.`,
		Example: `  coffer kms-plugin --listen unix:///var/run/coffer/kms.sock \
    --server https://coffer:8200 --key alias/k8s --token-file /etc/coffer/token
  # several replicas: the plugin fails over between them
  coffer kms-plugin --server https://coffer-0:8200 --server https://coffer-1:8200 \
    --key alias/k8s --token-file /etc/coffer/token
  # mTLS: log in to a role that trusts the node's certificate, refreshed automatically
  coffer kms-plugin --server https://coffer:8200 --key alias/k8s \
    --role kms-plugin --client-cert /etc/coffer/node.crt --client-key /etc/coffer/node.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usageErrorf("--key is required (a Coffer key id or alias/NAME)")
			}
			path, err := kmsplugin.SocketPath(listen)
			if err != nil {
				return usageErrorf("%v", err)
			}
			if len(servers) > 0 {
				cmd.Flags().Set("address", strings.Join(servers, ","))
			}
			if attemptTimeout <= 0 {
				return usageErrorf("--attempt-timeout must be positive")
			}
			opts := []client.Option{client.WithDoor("kms-plugin"), client.WithUserAgent("coffer-kms-plugin"),
				client.WithAttemptTimeout(attemptTimeout)}
			if (certFile == "") != (keyFile == "") {
				return usageErrorf("--client-cert and --client-key go together")
			}
			if certFile != "" {
				opts = append(opts, client.WithClientCertificate(certFile, keyFile))
			}
			switch {
			case role != "" && saTokenFile != "":
				opts = append(opts, client.WithKubernetesLogin(role, saTokenFile, cluster))
			case role != "":
				opts = append(opts, client.WithRole(role))
			case saTokenFile != "":
				return usageErrorf("--sa-token-file needs --role")
			}
			c, err := newClient(cmd, opts...)
			if err != nil {
				return err
			}
			readToken := func() (string, error) { return c.Token(), nil }
			if role != "" {
				// The client logs in and refreshes the role token itself.
				readToken = func() (string, error) { return "", nil }
			} else if tokenFile != "" {
				readToken = func() (string, error) {
					b, err := os.ReadFile(tokenFile)
					if err != nil {
						return "", err
					}
					return string(bytes.TrimSpace(b)), nil
				}
				tok, err := readToken()
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				c.SetToken(tok)
			}
			if c.Token() == "" && role == "" && os.Getenv(client.EnvAccessKeyID) == "" {
				return usageErrorf("no credential: give --token-file (or COFFER_TOKEN), or --role with --client-cert/--client-key or --sa-token-file")
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return runKMSPlugin(cmd.Context(), cmd.OutOrStdout(), logger, c, readToken, path, key, cluster, healthAddr, healthInterval, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "unix:///var/run/coffer/kms.sock", "unix socket for the kube-apiserver")
	f.StringSliceVar(&servers, "server", nil, "Coffer server URL; repeat it (or separate URLs with commas) for the replicas of one server, between which the plugin fails over (default: --address / COFFER_ADDR)")
	f.StringVar(&key, "key", "", "Coffer key id or alias that wraps the apiserver's seeds")
	f.StringVar(&tokenFile, "token-file", "", "file holding the Coffer token; re-read when it changes")
	f.StringVar(&role, "role", "", "log in to this role (with --client-cert/--client-key, --sa-token-file, or a token) and refresh the role token automatically")
	f.StringVar(&saTokenFile, "sa-token-file", "", "Kubernetes projected service-account token to log in to --role with")
	f.StringVar(&cluster, "cluster", "", "name of this cluster: bound into the encryption context of new seeds (older seeds still decrypt), and the registered cluster of --sa-token-file")
	f.StringVar(&certFile, "client-cert", "", "client certificate (PEM) for mTLS and certificate login")
	f.StringVar(&keyFile, "client-key", "", "key of --client-cert (PEM)")
	f.StringVar(&healthAddr, "health-addr", "", "address for /metrics, /livez and /readyz (for example 127.0.0.1:8787)")
	f.DurationVar(&healthInterval, "health-interval", 10*time.Second, "how often the encrypt/decrypt health round trip runs")
	f.DurationVar(&timeout, "timeout", 5*time.Second, "timeout of each call to Coffer")
	f.DurationVar(&attemptTimeout, "attempt-timeout", time.Second, "with several --server: how long one replica may take to answer an encrypt or decrypt before the next is tried")
	return cmd
}

func runKMSPlugin(parent context.Context, out io.Writer, logger *slog.Logger, c *client.Client, readToken func() (string, error),
	path, key, cluster, healthAddr string, interval, timeout time.Duration) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()

	metrics := kmsplugin.NewMetrics()
	p := kmsplugin.New(kmsplugin.Config{Coffer: c, Key: key, Cluster: cluster, HealthInterval: interval, Timeout: timeout, Logger: logger, Metrics: metrics})
	ln, err := kmsplugin.Listen(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	gs := kmsplugin.NewGRPCServer(path, timeout, p)
	var serving atomic.Bool
	serving.Store(true)

	if healthAddr != "" {
		hl, err := net.Listen("tcp", healthAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--health-addr: %w", err)
		}
		hs := &http.Server{Handler: kmsplugin.HealthHandler(p, metrics, serving.Load), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(hl)
		defer hs.Close()
		logger.Info("health endpoints", "addr", "http://"+hl.Addr().String())
	}
	// The token file may be rotated (for example a projected token); pick
	// up a new one before each health check.
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if tok, err := readToken(); err == nil && tok != "" && tok != c.Token() {
					c.SetToken(tok)
					logger.Info("token file changed; using the new token")
				}
			}
		}
	}()
	go p.Run(ctx)

	defer serving.Store(false)
	return serveGRPC(ctx, out, logger, gs, ln, path,
		"coffer kms plugin listening", "socket", path, "key", key, "server", strings.Join(c.Endpoints(), ","))
}

// serveGRPC serves gs on the unix socket ln (at path) until the server
// fails or ctx ends, then stops gracefully, forcing the stop after 10 s
// (the kubelet's or apiserver's calls in flight get their answers). msg and
// attrs are the "listening" log line.
func serveGRPC(ctx context.Context, out io.Writer, logger *slog.Logger, gs *grpc.Server, ln net.Listener, path, msg string, attrs ...any) error {
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	logger.Info(msg, attrs...)
	fmt.Fprintf(out, "Listening: unix://%s\n", path)
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		gs.Stop()
	}
	return nil
}
