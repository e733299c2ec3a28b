package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/term"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cofferkms/coffer/internal/k8senc"
)

// newK8sCmd builds `coffer k8s`.
func newK8sCmd() *cobra.Command {
	cmd := groupCmd("k8s", "Kubernetes tools: encryption at rest, and the CofferSecret sync controller")
	cmd.Long = `Tools for a Kubernetes cluster whose secrets are encrypted with the Coffer
KMS plugin: see how objects are stored in etcd, and re-encrypt the stale
ones after a key rotation. See docs/kubernetes.md.`
	cmd.AddCommand(newK8sStatusCmd(), newK8sMigrateCmd(), newK8sSyncCmd())
	return cmd
}

// etcdFlags are the flags of a read-only etcd connection.
type etcdFlags struct {
	endpoints            []string
	cacert, cert, key    string
	prefix               string
	pageSize             int64
	currentKeyID, plugin string
	provider             string
	timeout              time.Duration
}

func (e *etcdFlags) add(cmd *cobra.Command, required bool) {
	f := cmd.Flags()
	what := "etcd client URLs of the apiserver's etcd (read-only)"
	if !required {
		what += "; with them only stale objects are rewritten"
	}
	f.StringSliceVar(&e.endpoints, "etcd-endpoints", nil, what)
	f.StringVar(&e.cacert, "etcd-ca-cert", "", "PEM CA bundle that signed etcd's serving certificate")
	oldFlagNames(cmd, map[string]string{"etcd-cacert": "etcd-ca-cert"})
	f.StringVar(&e.cert, "etcd-cert", "", "PEM client certificate for etcd")
	f.StringVar(&e.key, "etcd-key", "", "PEM private key of --etcd-cert")
	f.StringVar(&e.prefix, "etcd-prefix", "/registry", "the apiserver's --etcd-prefix")
	f.Int64Var(&e.pageSize, "page-size", 500, "objects per etcd (and list) page")
	f.StringVar(&e.currentKeyID, "current-key-id", "", "the key_id new writes use (default: asked from --plugin-health, else inferred)")
	f.StringVar(&e.plugin, "plugin-health", "", "health address of a running coffer kms-plugin (its --health-addr); its /readyz tells the current key_id")
	f.StringVar(&e.provider, "provider", "", "name of the kms v2 provider objects should be under (default: any)")
	f.DurationVar(&e.timeout, "etcd-timeout", 10*time.Second, "give up when etcd does not answer within this time")
}

// client connects to etcd and checks that it answers within --etcd-timeout:
// the etcd client would otherwise retry an unreachable endpoint for as long
// as the whole command may run.
func (e *etcdFlags) client(ctx context.Context) (*clientv3.Client, error) {
	if e.timeout <= 0 {
		e.timeout = 10 * time.Second
	}
	cfg := clientv3.Config{Endpoints: e.endpoints, DialTimeout: e.timeout}
	if e.cacert != "" || e.cert != "" || e.key != "" {
		tlsInfo := transport.TLSInfo{CertFile: e.cert, KeyFile: e.key, TrustedCAFile: e.cacert}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tc
	}
	cl, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	if _, err := cl.Get(pctx, e.registryPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(1)); err != nil {
		cl.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("etcd at %s did not answer within %s (%v): check --etcd-endpoints, and --etcd-ca-cert, --etcd-cert and --etcd-key for an etcd with TLS",
			strings.Join(e.endpoints, ","), e.timeout, err)
	}
	return cl, nil
}

func (e *etcdFlags) registryPrefix() string { return strings.TrimSuffix(e.prefix, "/") + "/" }

// resolveKeyID returns the current key_id and where it came from.
func (e *etcdFlags) resolveKeyID(ctx context.Context) (string, string, error) {
	if e.currentKeyID != "" {
		return e.currentKeyID, "flag", nil
	}
	if e.plugin != "" {
		id, err := k8senc.PluginKeyID(ctx, e.plugin)
		if err != nil {
			return "", "", fmt.Errorf("--plugin-health: %w", err)
		}
		return id, "plugin", nil
	}
	return "", "", nil
}

func newK8sStatusCmd() *cobra.Command {
	var (
		ef        etcdFlags
		resources []string
		exitCode  bool
	)
	cmd := &cobra.Command{
		Use:   "encryption-status",
		Short: "Report how the apiserver's objects are stored in etcd (read-only)",
		Long: `Read the apiserver's etcd (only range reads) and report, per resource, how
many objects are stored in plaintext (identity), under which provider, and
under which KMS v2 key_id, and which of them are stale: plaintext, another
provider, or a key_id that is not the current one. Stale objects are what
'coffer k8s migrate' still has to rewrite.

The current key_id is --current-key-id, else the one a running plugin reports
(--plugin-health), else inferred from storage: the newest version of the
single Coffer key whose key_ids are stored. Right after a rotation no object
carries the new key_id yet, so the inference is only a fallback.`,
		Example: `  coffer k8s encryption-status --etcd-endpoints https://127.0.0.1:2379 \
    --etcd-ca-cert /etc/kubernetes/pki/etcd/ca.crt \
    --etcd-cert /etc/kubernetes/pki/apiserver-etcd-client.crt \
    --etcd-key /etc/kubernetes/pki/apiserver-etcd-client.key \
    --resources secrets,configmaps --plugin-health 127.0.0.1:8787`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(ef.endpoints) == 0 {
				return usageErrorf("--etcd-endpoints is required")
			}
			ctx := cmd.Context()
			keyID, source, err := ef.resolveKeyID(ctx)
			if err != nil {
				return err
			}
			cl, err := ef.client(ctx)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			defer cancel()
			rep, err := k8senc.Status(ctx, k8senc.EtcdSource{KV: cl}, k8senc.StatusOptions{
				Prefix: ef.registryPrefix(), Resources: resources, CurrentKeyID: keyID, CurrentKeyIDSource: source,
				Provider: ef.provider, PageSize: ef.pageSize,
			})
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				if err := printData(cmd, rep); err != nil {
					return err
				}
			} else if err := printStatusReport(cmd.OutOrStdout(), cmd.ErrOrStderr(), rep); err != nil {
				return err
			}
			if exitCode && rep.Stale > 0 {
				return &exitError{code: exitNo}
			}
			return nil
		},
	}
	ef.add(cmd, true)
	cmd.Flags().StringSliceVar(&resources, "resources", nil, "only these resources, as in kubectl api-resources (default: all)")
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit with status 3 when stale objects remain")
	return cmd
}

func printStatusReport(w, errw io.Writer, rep *k8senc.Report) error {
	rows := make([][]string, 0, len(rep.Rows))
	for _, r := range rep.Rows {
		stale := "no"
		if r.Stale {
			stale = "yes"
		}
		count := strconv.Itoa(r.Count)
		if r.Invalid > 0 {
			count += fmt.Sprintf(" (%d invalid)", r.Invalid)
		}
		rows = append(rows, []string{r.Resource, r.Provider, orDash(r.KeyID), count, stale})
	}
	if err := printTable(w, []string{"RESOURCE", "PROVIDER", "KEY_ID", "COUNT", "STALE"}, rows); err != nil {
		return err
	}
	cur := "unknown"
	if rep.CurrentKeyID != "" {
		cur = rep.CurrentKeyID + " (" + rep.CurrentKeyIDSource + ")"
	}
	fmt.Fprintf(w, "\nCurrent key_id: %s\nObjects: %d  plaintext: %d  stale: %d  (etcd revision %d)\n",
		cur, rep.Total, rep.Plaintext, rep.Stale, rep.Revision)
	for _, warn := range rep.Warnings {
		fmt.Fprintf(errw, "coffer: warning: %s\n", warn)
	}
	return nil
}

func newK8sMigrateCmd() *cobra.Command {
	var (
		ef                          etcdFlags
		kubeconfig, kubeContext, ns string
		resources                   []string
		ratePerSec                  float64
		checkpointPath              string
		resume, dryRun, noProgress  bool
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Re-encrypt stale objects with a no-op update through the Kubernetes API",
		Long: `Rewrite objects so the apiserver stores them again with its current write
provider and key_id: a no-op update per object, through the Kubernetes API,
so it is safe while the cluster serves traffic (conflicts are retried on the
newest version). The apiserver skips the write of an object that is already
current, so without --etcd-endpoints every object is updated and only stale
ones are written; with them (and the current key_id from --current-key-id or
--plugin-health) objects known to be current are not even sent.

Updates are rate limited (--rate per second). With --checkpoint FILE every
finished object is recorded, and --resume skips the recorded ones after an
interruption. Progress shows on a terminal; a summary is printed at the end
and the exit status is 1 when some objects failed.

Run it after the apiserver uses the new key_id: after a rotation, wait until
the plugin's /readyz shows it and then at least the apiserver's status poll
interval (one minute), or check that a newly written Secret carries it with
'coffer k8s encryption-status'.`,
		Example: `  coffer k8s migrate --kubeconfig ~/.kube/config --resources secrets,configmaps \
    --rate 50 --checkpoint /var/tmp/coffer-migrate.ckpt --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(resources) == 0 {
				return usageErrorf("--resources must name at least one resource")
			}
			if resume && checkpointPath == "" {
				return usageErrorf("--resume needs --checkpoint FILE")
			}
			ctx := cmd.Context()
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			if kubeconfig != "" {
				rules.ExplicitPath = kubeconfig
			}
			restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
				&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
			if err != nil {
				return fmt.Errorf("kubeconfig: %w", err)
			}
			restCfg.QPS, restCfg.Burst = float32(max(2*ratePerSec, 50)), int(max(4*ratePerSec, 100))
			restCfg.UserAgent = "coffer-k8s-migrate"
			dyn, err := dynamic.NewForConfig(restCfg)
			if err != nil {
				return err
			}
			hc, err := rest.HTTPClientFor(restCfg)
			if err != nil {
				return err
			}
			base, _, err := rest.DefaultServerUrlFor(restCfg)
			if err != nil {
				return fmt.Errorf("kubeconfig server: %w", err)
			}
			lists, err := k8senc.PreferredResources(ctx, hc, base.String())
			if err != nil {
				return err
			}
			res, err := k8senc.ResolveResources(lists, resources)
			if err != nil {
				return err
			}
			opts := k8senc.MigrateOptions{Client: dyn, Resources: res, Namespace: ns, Rate: ratePerSec,
				PageSize: ef.pageSize, DryRun: dryRun, Provider: ef.provider, Log: cmd.ErrOrStderr()}
			if len(ef.endpoints) > 0 {
				keyID, _, err := ef.resolveKeyID(ctx)
				if err != nil {
					return err
				}
				cl, err := ef.client(ctx)
				if err != nil {
					return err
				}
				defer cl.Close()
				stored, err := k8senc.StoredValues(ctx, k8senc.EtcdSource{KV: cl}, ef.registryPrefix(), res, ef.pageSize)
				if err != nil {
					return err
				}
				opts.Stored, opts.CurrentKeyID = stored, keyID
				if keyID == "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "coffer: warning: no --current-key-id or --plugin-health: objects under kms v2 are all updated (the apiserver writes only stale ones)")
				}
			}
			if checkpointPath != "" {
				ck, err := k8senc.OpenCheckpoint(checkpointPath, resume)
				if err != nil {
					return fmt.Errorf("--checkpoint: %w", err)
				}
				defer ck.Close()
				opts.Checkpoint = ck
			}
			if f, ok := cmd.ErrOrStderr().(*os.File); ok && !noProgress && term.IsTerminal(int(f.Fd())) {
				opts.Progress = &barProgress{w: f}
			}
			sum, err := k8senc.Migrate(ctx, opts)
			if sum != nil {
				if wantJSON(cmd) {
					printData(cmd, sum)
				} else {
					printMigrateSummary(cmd.OutOrStdout(), resources, sum, dryRun)
				}
			}
			if err != nil {
				return err
			}
			if sum.Failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d objects failed; run again with --resume to retry them", sum.Failed)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kubeContext, "context", "", "kubeconfig context (default: the current one)")
	f.StringSliceVar(&resources, "resources", []string{"secrets"}, "resources to migrate, as in kubectl api-resources")
	f.StringVarP(&ns, "namespace", "n", "", "only this namespace (default: all)")
	f.Float64Var(&ratePerSec, "rate", 50, "updates per second at most (0: no limit)")
	f.StringVar(&checkpointPath, "checkpoint", "", "record finished objects in FILE")
	f.BoolVar(&resume, "resume", false, "skip the objects recorded in --checkpoint")
	f.BoolVar(&dryRun, "dry-run", false, "count what would be rewritten, update nothing")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bar even on a terminal")
	ef.add(cmd, false)
	return cmd
}

func printMigrateSummary(w io.Writer, order []string, s *k8senc.Summary, dryRun bool) {
	rows := [][]string{}
	for _, name := range order {
		c := s.Resources[name]
		if c == nil {
			continue
		}
		rows = append(rows, []string{name, strconv.Itoa(c.Listed), strconv.Itoa(c.Rewritten), strconv.Itoa(c.Skipped), strconv.Itoa(c.Failed)})
	}
	verb := "REWRITTEN"
	if dryRun {
		verb = "TO_REWRITE"
	}
	printTable(w, []string{"RESOURCE", "LISTED", verb, "SKIPPED", "FAILED"}, rows)
	fmt.Fprintf(w, "\nListed %d, rewritten %d, skipped %d (current %d, checkpoint %d, deleted %d), failed %d in %s\n",
		s.Listed, s.Rewritten, s.Current+s.Resumed+s.Gone, s.Current, s.Resumed, s.Gone, s.Failed, s.Duration.Round(time.Millisecond))
	for _, e := range s.Errors {
		fmt.Fprintf(w, "  failed: %s\n", e)
	}
}

// barProgress draws a progress bar on a terminal.
type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (p *barProgress) Start(resource string, total int64) {
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(resource),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("obj"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
}

func (p *barProgress) Add(n int) {
	if p.bar != nil {
		p.bar.Add(n)
	}
}

func (p *barProgress) Finish() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}
