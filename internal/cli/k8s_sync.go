package cli

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/secretsync"
)

// saNamespaceFile holds the namespace of a pod's service account.
const saNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func newK8sSyncCmd() *cobra.Command {
	var (
		kubeconfig, kubeContext        string
		role, audience, cluster, ns    string
		leaseNamespace, leaseName      string
		resync, wait                   time.Duration
		workers, kubeBurst             int
		kubeQPS                        float32
		leaseDuration, renew, retryGap time.Duration
	)
	cmd := &cobra.Command{
		Use:         "sync",
		Annotations: map[string]string{annotNoTokenCache: "yes"},
		Short:       "Run the controller that writes CofferSecrets into Kubernetes Secrets",
		Long: `Run the CofferSecret controller (custom resource coffersecrets.cofferkms.io,
installed with deploy/coffer-sync/). For each CofferSecret it mints a short
token of the service account named in it (default "default", in the
resource's namespace), logs in to Coffer's Kubernetes auth role with it,
reads the secret and writes it into a Kubernetes Secret; it long-polls
Coffer for new versions and rewrites the Secret, then optionally restarts
named Deployments and StatefulSets. Status conditions say Synced,
Forbidden, NotFound, Conflict (a Secret of that name it does not own) or
InvalidSpec. Replicas elect a leader through a Lease; only the leader
writes. The controller holds no Coffer credential of its own.
See docs/k8s-sync.md.`,
		Example: `  coffer k8s sync --address https://coffer.coffer.svc:8200 --ca-cert /etc/coffer/ca/ca.crt --role k8s-sync
  coffer k8s sync --kubeconfig ~/.kube/config --role k8s-sync --lease-namespace coffer-system`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case workers < 1:
				return usageErrorf("--workers must be at least 1")
			case resync <= 0:
				return usageErrorf("--resync must be positive")
			case wait < time.Second || wait > 5*time.Minute:
				return usageErrorf("--wait must be between 1s and 5m")
			case kubeQPS <= 0 || kubeBurst < 1:
				return usageErrorf("--kube-qps and --kube-burst must be positive")
			case leaseName == "":
				return usageErrorf("--lease-name must not be empty")
			case leaseDuration <= renew || renew <= retryGap || retryGap <= 0:
				return usageErrorf("want --lease-duration > --renew-deadline > --retry-period > 0")
			case leaseDuration%time.Second != 0 || renew+retryGap >= leaseDuration:
				return usageErrorf("want --lease-duration in whole seconds, greater than --renew-deadline plus --retry-period (a leader may notice a lost renewal only one retry late)")
			}
			if leaseNamespace == "" {
				leaseNamespace = os.Getenv("POD_NAMESPACE")
			}
			if leaseNamespace == "" {
				if b, err := os.ReadFile(saNamespaceFile); err == nil {
					leaseNamespace = strings.TrimSpace(string(b))
				}
			}
			if leaseNamespace == "" {
				return usageErrorf("--lease-namespace is required outside a pod (or set POD_NAMESPACE)")
			}
			s, err := resolveSettings(cmd)
			if err != nil {
				return err
			}
			newClient := func(token string) (*client.Client, error) {
				return client.New(s.address, client.WithToken(token), client.WithCACertFile(s.caCert),
					client.WithInsecureSkipVerify(s.skipVerify), client.WithDoor("k8s-sync"), client.WithUserAgent("coffer-k8s-sync"))
			}
			if _, err := newClient(""); err != nil {
				return usageErrorf("--address: %s", strings.TrimPrefix(err.Error(), "client: "))
			}

			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			if kubeconfig != "" {
				rules.ExplicitPath = kubeconfig
			}
			restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
				&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
			if err != nil {
				return fmt.Errorf("kubeconfig: %w", err)
			}
			restCfg.UserAgent = "coffer-k8s-sync"
			restCfg.QPS, restCfg.Burst = kubeQPS, kubeBurst
			// The dynamic client only: the typed clientset would link every
			// Kubernetes API type into coffer (about 15 MiB more at rest,
			// for every command; TestBinaryLinksNoKubeScheme).
			dyn, err := dynamic.NewForConfig(restCfg)
			if err != nil {
				return fmt.Errorf("kubernetes client: %w", err)
			}
			identity, err := leaseIdentity()
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "coffer k8s sync: identity %s, lease %s/%s, Coffer at %s\n", identity, leaseNamespace, leaseName, s.address)
			return secretsync.Run(ctx, secretsync.Config{
				Dynamic: dyn, Coffer: &secretsync.ClientCoffer{NewClient: newClient, Cluster: cluster},
				Role: role, Audience: audience, Namespace: ns,
				LeaseNamespace: leaseNamespace, LeaseName: leaseName, Identity: identity,
				LeaseDuration: leaseDuration, RenewDeadline: renew, RetryPeriod: retryGap,
				Resync: resync, Wait: wait, Workers: workers, Logger: logger,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in the pod, its service account; else $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kubeContext, "context", "", "kubeconfig context (default: the current one)")
	f.StringVar(&role, "role", "", "Coffer Kubernetes-auth role of a CofferSecret without spec.role")
	f.StringVar(&audience, "audience", "coffer", "audience of the service-account tokens minted to log in")
	f.StringVar(&cluster, "cluster", "", "registered Coffer cluster name sent with each login (default: the one whose issuer signed the token)")
	f.StringVar(&ns, "namespace", "", "watch CofferSecrets of this namespace only (default: all)")
	f.StringVar(&leaseNamespace, "lease-namespace", "", "namespace of the leader-election Lease (default: $POD_NAMESPACE, else the pod's own)")
	f.StringVar(&leaseName, "lease-name", "coffer-sync", "name of the leader-election Lease")
	f.DurationVar(&leaseDuration, "lease-duration", 15*time.Second, "how long a leader's lease lasts without renewal")
	f.DurationVar(&renew, "renew-deadline", 10*time.Second, "how long the leader retries renewing before it steps down")
	f.DurationVar(&retryGap, "retry-period", 2*time.Second, "time between attempts to take or renew the lease")
	f.DurationVar(&resync, "resync", 10*time.Minute, "informer resync period (a safety net; new versions come from the long-poll)")
	f.DurationVar(&wait, "wait", 50*time.Second, "how long one long-poll on secret versions waits (at most 5m)")
	f.IntVar(&workers, "workers", 4, "CofferSecrets reconciled in parallel")
	f.Float32Var(&kubeQPS, "kube-qps", 100, "requests per second to the kube-apiserver, sustained")
	f.IntVar(&kubeBurst, "kube-burst", 200, "requests to the kube-apiserver in a burst")
	return cmd
}

// leaseIdentity is the hostname (the pod's name) and a random suffix, so
// a restarted pod of the same name is a new holder.
func leaseIdentity() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "coffer-sync"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return host + "_" + hex.EncodeToString(b[:]), nil
}
