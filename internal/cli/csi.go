package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/csiprovider"
)

// newCSIProviderCmd builds `coffer csi-provider`.
func newCSIProviderCmd() *cobra.Command {
	var (
		socket, cluster string
		allowed         []string
		timeout         time.Duration
	)
	cmd := &cobra.Command{
		Use:         "csi-provider",
		Annotations: map[string]string{annotNoTokenCache: "yes"},
		Short:       "Run the Secrets Store CSI Driver provider on a node",
		Long: `Run Coffer's provider for the Kubernetes Secrets Store CSI Driver on a unix
socket of the node. For each pod that mounts a secrets-store volume of a
SecretProviderClass with provider: coffer, the driver passes the pod's
service-account token; the provider logs in to the class's role with it,
reads the named secrets as the pod and returns them as files. No Kubernetes
Secret is created. The provider holds no credential of its own.
See docs/secrets.md, "Secrets Store CSI driver".`,
		Example: `  coffer csi-provider --address https://coffer:8200 --ca-cert /etc/coffer/ca.crt
  coffer csi-provider --socket /etc/kubernetes/secrets-store-csi-providers/coffer.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if socket == "" {
				return usageErrorf("--socket must not be empty")
			}
			if timeout <= 0 {
				return usageErrorf("--timeout must be positive")
			}
			s, err := resolveSettings(cmd)
			if err != nil {
				return err
			}
			hc, err := csiHTTPClient(s.caCert, s.skipVerify)
			if err != nil {
				return usageErrorf("%v", err)
			}
			newClient := func(address, token string) (*client.Client, error) {
				return client.New(address, client.WithHTTPClient(hc), client.WithToken(token),
					client.WithDoor("csi-provider"), client.WithUserAgent("coffer-csi-provider"))
			}
			// Refuse a malformed --address now rather than at the first mount.
			if _, err := newClient(s.address, ""); err != nil {
				return usageErrorf("--address: %v", err)
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			p := csiprovider.New(csiprovider.Config{Address: s.address, AllowedAddresses: allowed, Cluster: cluster, NewClient: newClient,
				Timeout: timeout, Version: currentVersion().String(), Logger: logger})
			return runCSIProvider(cmd.Context(), cmd.OutOrStdout(), logger, p, socket, s.address)
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", csiprovider.DefaultSocket, "unix socket the driver calls (its provider directory plus coffer.sock)")
	f.StringVar(&cluster, "cluster", "", "registered cluster name sent with each login (default: the one whose issuer signed the token)")
	f.StringSliceVar(&allowed, "allowed-address", nil, "another Coffer server a SecretProviderClass may name in cofferAddress (repeatable); others are refused")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "time one mount may take, login and reads included")
	return cmd
}

// csiHTTPClient is the transport shared by every mount's client.
func csiHTTPClient(caFile string, skipVerify bool) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-cert %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr}, nil
}

func runCSIProvider(parent context.Context, out io.Writer, logger *slog.Logger, p *csiprovider.Provider, path, address string) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := csiprovider.Listen(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	gs := csiprovider.NewGRPCServer(p)
	return serveGRPC(ctx, out, logger, gs, ln, path, "coffer csi provider listening", "socket", path, "server", address)
}
