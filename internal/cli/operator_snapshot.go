package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/snapshot"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/sys"
)

// newOperatorSnapshotCmd builds `coffer operator snapshot`.
func newOperatorSnapshotCmd() *cobra.Command {
	cmd := groupCmd("snapshot", "Back up the whole store to a file, check a backup, restore one")
	cmd.Long = `Back up the whole store to a snapshot file, check one, and restore one.

A snapshot is every storage entry of one consistent view of the store, still
encrypted by the barrier: it holds no plaintext and is useless without the
unseal shares. It ends with a SHA-256 checksum. The format is documented in
docs/snapshot-format.md.`
	cmd.AddCommand(newSnapshotSaveCmd(), newSnapshotInspectCmd(), newSnapshotRestoreCmd())
	return cmd
}

// snapshotFileInfo is what save and inspect print.
type snapshotFileInfo struct {
	File string `json:"file"`
	snapshot.Summary
	// Restorable says whether this Coffer can restore it.
	Restorable bool `json:"restorable"`
}

func printSnapshotInfo(cmd *cobra.Command, info snapshotFileInfo) error {
	if wantJSON(cmd) {
		return printData(cmd, info)
	}
	restorable := "yes"
	if !info.Restorable {
		restorable = "no: written by a newer Coffer"
	}
	return printFields(cmd.OutOrStdout(), []field{
		{"File", info.File},
		{"Entries", fmt.Sprint(info.Count)},
		{"Store", fmt.Sprintf("%s at revision %d", info.Backend, info.Revision)},
		{"Taken", info.Created.Format(time.RFC3339)},
		{"Written by", "coffer " + info.CofferVersion},
		{"Format", fmt.Sprint(info.Format)},
		{"Bytes", fmt.Sprint(info.Bytes)},
		{"SHA-256", info.Checksum},
		{"Restorable here", restorable},
	})
}

// newSnapshotSaveCmd builds `coffer operator snapshot save`.
func newSnapshotSaveCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Download a snapshot of the server's store (needs sys:Snapshot)",
		Long: `Download a snapshot of the whole store from a running server: one
consistent view (one bbolt read transaction, or one etcd revision), still
barrier-encrypted. The file is written next to FILE, synced, checked (count
and checksum) and only then renamed to FILE, with mode 0600; an existing FILE
is replaced only with --force. Keep snapshots away from the unseal shares.`,
		Example: "  coffer operator snapshot save /backup/coffer-$(date +%F).snap",
		Args:    exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if _, err := os.Lstat(path); err == nil && !force {
				return fmt.Errorf("%s exists; pass --force to replace it", path)
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			stream, err := c.Snapshot(cmd.Context())
			if err != nil {
				return err
			}
			defer stream.Close()
			sum, err := saveVerified(path, stream, stream.Checksum)
			if err != nil {
				return err
			}
			return printSnapshotInfo(cmd, snapshotFileInfo{File: path, Summary: sum, Restorable: snapshot.Compatible(sum.CofferVersion, sys.Version) == nil})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	return cmd
}

// saveVerified writes r to path atomically: a temporary file in the same
// directory (0600), synced, verified as a snapshot (and against the
// checksum the server announced, when it did), renamed, and the directory
// synced. A failure leaves no file behind.
func saveVerified(path string, r io.Reader, announced string) (sum snapshot.Summary, err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return sum, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return sum, err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		return sum, fmt.Errorf("downloading the snapshot: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return sum, err
	}
	// Check what is on disk, not what went by.
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return sum, err
	}
	sum, err = snapshot.Verify(tmp, snapshot.ReadOptions{})
	if err != nil {
		return sum, fmt.Errorf("the downloaded snapshot does not verify (nothing was saved): %w", err)
	}
	if announced != "" && announced != sum.Checksum {
		return sum, fmt.Errorf("the downloaded snapshot's checksum %s is not the %s the server announced (nothing was saved)", sum.Checksum, announced)
	}
	if err := tmp.Close(); err != nil {
		return sum, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return sum, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return sum, nil
}

// newSnapshotInspectCmd builds `coffer operator snapshot inspect`.
func newSnapshotInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a snapshot file (count and checksum) and show what it holds",
		Long: `Read a whole snapshot file and check it: its format, its entry count,
the order of its keys and its SHA-256 checksum. Prints when and from what
store it was taken. Needs no server. Exits 1 when the file does not verify.`,
		Example: "  coffer operator snapshot inspect /backup/coffer.snap -o json",
		Args:    exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			sum, err := snapshot.Verify(f, snapshot.ReadOptions{})
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return printSnapshotInfo(cmd, snapshotFileInfo{File: args[0], Summary: sum, Restorable: snapshot.Compatible(sum.CofferVersion, sys.Version) == nil})
		},
	}
}

// newSnapshotRestoreCmd builds `coffer operator snapshot restore`.
func newSnapshotRestoreCmd() *cobra.Command {
	var (
		config string
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "restore FILE --config coffer.yaml",
		Short: "Restore a snapshot into the store a server config names (offline)",
		Long: `Restore a snapshot into the storage the server config names: its bbolt
file (with the server stopped) or its etcd prefix (with every replica
stopped). The whole file is checked first; nothing is written from a file
that does not verify, nor from one written by a newer Coffer. A store that
holds anything is refused unless --force, which deletes what it holds first.
Entries are written in batches, each on the condition that its key does not
exist, then read back and compared with the snapshot by count and content
digest. Asks for confirmation on a terminal; --yes confirms in scripts.

After a restore, start the server(s) and unseal them with the unseal shares
of the installation the snapshot came from.`,
		Example: "  coffer operator snapshot restore /backup/coffer.snap --config /etc/coffer/coffer.yaml --yes",
		Args:    exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if config == "" {
				return usageErrorf("--config is required: the server config whose storage to restore into")
			}
			cfg, err := server.LoadConfig(config)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			sum, err := snapshot.Verify(f, snapshot.ReadOptions{CofferVersion: sys.Version})
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			ctx := cmd.Context()
			dst, where, err := server.OpenOfflineStorage(ctx, cfg)
			if err != nil {
				return err
			}
			defer dst.Close()
			what := fmt.Sprintf("restore %s (%d entries taken %s from %s) into %s", args[0], sum.Count, sum.Created.Format(time.RFC3339), sum.Backend, where)
			if force {
				what += ", deleting everything it holds first"
			}
			if err := confirm(cmd, what); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			res, err := snapshot.Restore(ctx, f, dst, snapshot.RestoreOptions{CofferVersion: sys.Version, Force: force, Progress: progress(cmd, "restore")})
			if err != nil {
				if errors.Is(err, snapshot.ErrNotEmpty) {
					return fmt.Errorf("%s: %w", where, err)
				}
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, struct {
					Target string `json:"target"`
					snapshot.RestoreResult
				}{where, res})
			}
			return printFields(cmd.OutOrStdout(), []field{
				{"Restored", fmt.Sprintf("%d entries into %s", res.Written, where)},
				{"Deleted first", fmt.Sprint(res.Deleted)},
				{"Verified", fmt.Sprintf("%v (count and content digest %s read back)", res.Verified, res.Snapshot.Digest)},
				{"Next", "start the server(s) and unseal them with the shares of the installation the snapshot came from"},
			})
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "server config file (its storage: section is the target)")
	cmd.Flags().BoolVar(&force, "force", false, "delete what the target store holds before restoring")
	addYesFlag(cmd)
	return cmd
}

// progress returns a callback that reports progress on standard error at
// most every two seconds (nothing for a short job).
func progress(cmd *cobra.Command, what string) func(written, total uint64) {
	start, last := time.Now(), time.Now()
	return func(written, total uint64) {
		if time.Since(last) < 2*time.Second {
			return
		}
		last = time.Now()
		fmt.Fprintf(cmd.ErrOrStderr(), "coffer: %s: %d of %d entries written (%s)\n", what, written, total, time.Since(start).Round(time.Second))
	}
}

// newOperatorMigrateCmd builds `coffer operator migrate`.
func newOperatorMigrateCmd() *cobra.Command {
	var (
		from, to string
		ef       storeEtcdFlags
		force    bool
	)
	cmd := &cobra.Command{
		Use:   "migrate --from bbolt:PATH --to etcd:ENDPOINTS",
		Short: "Copy every entry of one store into another, offline (bbolt to etcd, etcd to bbolt)",
		Long: `Copy every storage entry of one store into another, values verbatim (they
stay barrier-encrypted, so the same unseal shares open the copy): to move an
installation from its bbolt file to an etcd cluster for high availability,
or back. Stop the server (every replica) first.

The copy is resumable: run it again after an interruption and keys the target
already holds with the same value are skipped. A target that holds a
different value for a key, or keys the source does not have, is refused
before anything is written, unless --force (which overwrites and deletes
them). At the end the target is read back and compared with the source by
count and content digest.

A store is bbolt:PATH (a Coffer storage file) or etcd:URL[,URL...] (the
client URLs of the etcd members), with --etcd-prefix and the TLS flags.`,
		Example: `  coffer operator migrate --from bbolt:/var/lib/coffer/coffer.db \
    --to etcd:https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379 \
    --etcd-ca-cert /etc/coffer/etcd-ca.pem --etcd-cert /etc/coffer/etcd-client.pem \
    --etcd-key /etc/coffer/etcd-client-key.pem
  coffer operator migrate --from etcd:http://127.0.0.1:2379 --to bbolt:/var/lib/coffer/coffer.db -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usageErrorf("--from and --to are required: bbolt:PATH or etcd:URL[,URL...]")
			}
			src, err := parseStoreSpec("--from", from)
			if err != nil {
				return err
			}
			dst, err := parseStoreSpec("--to", to)
			if err != nil {
				return err
			}
			switch {
			case src.kind == "etcd" && dst.kind == "etcd":
				return usageErrorf("--from and --to are both etcd; copy between etcd prefixes with a snapshot (save, then restore) instead")
			case src.kind == "bbolt" && dst.kind == "bbolt" && sameFile(src.path, dst.path):
				return usageErrorf("--from and --to are the same file")
			}
			if force {
				if err := confirm(cmd, fmt.Sprintf("copy %s into %s, overwriting its values that differ and deleting its keys the source does not have", src, dst)); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			if src.kind == "bbolt" {
				// Opening a missing file would create an empty store.
				if _, err := os.Stat(src.path); err != nil {
					return fmt.Errorf("--from %s: %w", src, err)
				}
			}
			sb, err := src.open(ctx, &ef)
			if err != nil {
				return fmt.Errorf("--from %s: %w", src, err)
			}
			defer sb.Close()
			db, err := dst.open(ctx, &ef)
			if err != nil {
				return fmt.Errorf("--to %s: %w", dst, err)
			}
			defer db.Close()
			res, err := snapshot.Copy(ctx, sb, db, snapshot.CopyOptions{Force: force, Progress: progress(cmd, "migrate")})
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, struct {
					From string `json:"from"`
					To   string `json:"to"`
					snapshot.CopyResult
				}{src.String(), dst.String(), res})
			}
			return printFields(cmd.OutOrStdout(), []field{
				{"From", src.String()},
				{"To", dst.String()},
				{"Entries", fmt.Sprint(res.Entries)},
				{"Copied", fmt.Sprint(res.Copied)},
				{"Already there", fmt.Sprint(res.Skipped)},
				{"Overwritten", fmt.Sprint(res.Overwritten)},
				{"Deleted", fmt.Sprint(res.Deleted)},
				{"Verified", fmt.Sprintf("%v (count and content digest %s)", res.Verified, res.Digest)},
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source store: bbolt:PATH or etcd:URL[,URL...]")
	f.StringVar(&to, "to", "", "target store: bbolt:PATH or etcd:URL[,URL...]")
	f.BoolVar(&force, "force", false, "overwrite target values that differ from the source and delete target keys the source does not have")
	ef.add(cmd)
	addYesFlag(cmd)
	return cmd
}

// storeEtcdFlags are the etcd flags of migrate.
type storeEtcdFlags struct {
	prefix            string
	cacert, cert, key string
	timeout           time.Duration
}

func (e *storeEtcdFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.prefix, "etcd-prefix", etcd.DefaultPrefix, "etcd key prefix of the Coffer store (storage.etcd.prefix)")
	f.StringVar(&e.cacert, "etcd-ca-cert", "", "PEM CA bundle that signed etcd's serving certificate")
	f.StringVar(&e.cert, "etcd-cert", "", "PEM client certificate for etcd")
	f.StringVar(&e.key, "etcd-key", "", "PEM private key of --etcd-cert")
	f.DurationVar(&e.timeout, "etcd-timeout", 10*time.Second, "give up when etcd does not answer within this time")
}

// storeSpec is a parsed --from or --to.
type storeSpec struct {
	kind      string // bbolt or etcd
	path      string
	endpoints []string
}

func (s storeSpec) String() string {
	if s.kind == "etcd" {
		return "etcd:" + strings.Join(s.endpoints, ",")
	}
	return "bbolt:" + s.path
}

func parseStoreSpec(flag, v string) (storeSpec, error) {
	kind, rest, ok := strings.Cut(v, ":")
	switch {
	case !ok || rest == "":
	case kind == "bbolt" || kind == "bolt":
		return storeSpec{kind: "bbolt", path: rest}, nil
	case kind == "etcd":
		var eps []string
		for _, ep := range strings.Split(rest, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				eps = append(eps, ep)
			}
		}
		if len(eps) > 0 {
			return storeSpec{kind: "etcd", endpoints: eps}, nil
		}
	}
	return storeSpec{}, usageErrorf("%s %q: want bbolt:PATH or etcd:URL[,URL...]", flag, v)
}

// open opens the store offline: a bbolt file no server holds, or an etcd
// prefix no replica runs on.
func (s storeSpec) open(ctx context.Context, e *storeEtcdFlags) (storage.Backend, error) {
	if s.kind == "bbolt" {
		b, err := bolt.Open(s.path, bolt.Options{LockTimeout: -1})
		if errors.Is(err, bolt.ErrLocked) {
			return nil, fmt.Errorf("%w: a coffer server is probably running on it; stop it first (migrate works offline)", err)
		}
		return b, err
	}
	octx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	b, err := etcd.Open(octx, etcd.Config{Endpoints: s.endpoints, Prefix: e.prefix, DialTimeout: e.timeout, RequestTimeout: e.timeout,
		TLS: etcd.TLSConfig{CAFile: e.cacert, CertFile: e.cert, KeyFile: e.key}})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w (check the endpoints, and --etcd-ca-cert, --etcd-cert and --etcd-key for an etcd with TLS)", err)
	}
	if err := server.RefuseLiveReplicas(ctx, b); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func sameFile(a, b string) bool {
	ia, errA := os.Stat(a)
	ib, errB := os.Stat(b)
	if errA != nil || errB != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return os.SameFile(ia, ib)
}
