package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/loadgen"
)

// benchKeyDescription is the description of the throwaway key `coffer bench`
// creates when no --key is given.
const benchKeyDescription = "coffer bench"

// The environment variables of the access key `coffer bench --door
// aws-kms` signs with. Without them bench creates a throwaway one.
const (
	envBenchAWSAccessKeyID     = "COFFER_BENCH_AWS_ACCESS_KEY_ID"
	envBenchAWSSecretAccessKey = "COFFER_BENCH_AWS_SECRET_ACCESS_KEY"
)

// benchOptions holds the flags of `coffer bench`.
type benchOptions struct {
	op          string
	key         string
	payloadSize int
	batchSize   int
	concurrency int
	duration    time.Duration
	requests    int64
	warmup      time.Duration
	json        bool
	insecure    bool
	http1       bool
	context     *kvFlag
	door        string
	awsRegion   string
	vaultMount  string
}

// newBenchCmd builds `coffer bench`, a closed-loop load generator for the KMS
// API, in the spirit of vault-benchmark.
func newBenchCmd() *cobra.Command {
	var o benchOptions
	ops := make([]string, 0, len(loadgen.AllOps()))
	for _, op := range loadgen.AllOps() {
		ops = append(ops, string(op))
	}
	var doors []string
	for _, d := range loadgen.AllDoors() {
		doors = append(doors, string(d))
	}
	cmd := &cobra.Command{
		Use:         "bench",
		Annotations: map[string]string{annotNoTokenCache: "yes"},
		Short:       "Load-test a Coffer server's KMS API",
		Long: `Bench runs a closed-loop load against a Coffer server: --concurrency workers
each send one request, wait for the whole answer and send the next, for
--duration or until --requests requests have been sent, whichever comes first.
Every request carries the same body, built once. It then prints throughput and
latency percentiles (or JSON with -o json).

Operations: ` + strings.Join(ops, ", ") + `.
decrypt and decrypt-batch encrypt one payload first and then decrypt its
ciphertext; the batch operations send --batch-size items per request; datakey
and random ask for --payload-size bytes; secret-get writes one secret
(coffer-bench/secret-get, one field of --payload-size characters, under the
key) and then reads its current version.

The server address, token and CA certificate come from --address, --token and
--ca-cert, or the environment variables COFFER_ADDR, COFFER_TOKEN and
COFFER_CACERT (default address ` + client.DefaultAddress + `). Without a token,
the other credentials every command takes work too (an access key, COFFER_ROLE
with a token file or client certificate): bench logs in once before the run
and uses that session for its whole length; --insecure-skip-verify,
--tls-skip-verify or COFFER_SKIP_VERIFY=1 turn off TLS verification. Over https
the load uses HTTP/2. -o json or yaml prints the result as data.

Without --key, bench creates a throwaway key (description "coffer bench") and
schedules its deletion when done.

--door picks the API: rest (Coffer's own, the default), aws-kms (the AWS KMS
JSON 1.1 API, POST / with X-Amz-Target TrentService.Encrypt or .Decrypt) or
vault (the Vault-compatible transit API, /v1/<--vault-mount>/encrypt/NAME).
The compatible doors load encrypt and decrypt only. aws-kms signs every
request with Signature Version 4, using the AWS SDK's signer, as an AWS
client does, for --aws-region (the server's region, default us-east-1), with
the access key in ` + envBenchAWSAccessKeyID + ` and ` + envBenchAWSSecretAccessKey + `;
without them bench uses its token to create a throwaway access key holding
a policy of its own that allows kms:Encrypt and kms:Decrypt on the key only,
and deletes both after the run. vault sends the token as X-Vault-Token and
names the key by its alias: --key must be alias/NAME (a throwaway key gets an
alias coffer-bench-HEX, deleted after the run); it takes no --context.`,
		Example: `  coffer bench --op encrypt -c 32 -d 10s
  coffer bench --op encrypt-batch --batch-size 100 --key alias/bench -o json
  COFFER_ADDR=https://127.0.0.1:8200 COFFER_TOKEN=... coffer bench -n 100000 --insecure-skip-verify
  coffer bench --door aws-kms --op decrypt -c 32 -d 10s
  coffer bench --door vault --key alias/orders`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.op, "op", string(loadgen.OpEncrypt), "operation to load: "+strings.Join(ops, ", "))
	f.StringVar(&o.key, "key", "", "key id or alias (\"alias/NAME\") to use (default: create a throwaway key)")
	f.IntVar(&o.payloadSize, "payload-size", loadgen.DefaultPayloadSize, "plaintext bytes per item; data key or random bytes for datakey and random")
	f.IntVar(&o.batchSize, "batch-size", loadgen.DefaultBatchSize, "items per request of encrypt-batch and decrypt-batch")
	f.IntVarP(&o.concurrency, "concurrency", "c", loadgen.DefaultConcurrency, "number of workers, each with one request in flight")
	f.DurationVarP(&o.duration, "duration", "d", loadgen.DefaultDuration, "length of the measured run (with only --requests given, no time bound)")
	f.Int64VarP(&o.requests, "requests", "n", 0, "total requests of the measured run (0: no bound)")
	f.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before the run, to open connections and warm caches (0 to skip)")
	f.BoolVar(&o.insecure, "insecure-skip-verify", false, "do not verify the server's TLS certificate")
	f.BoolVar(&o.http1, "http1", false, "speak HTTP/1.1 over TLS, one connection per worker, instead of HTTP/2")
	f.StringVar(&o.door, "door", string(loadgen.DoorREST), "API to load: "+strings.Join(doors, ", "))
	f.StringVar(&o.awsRegion, "aws-region", loadgen.DefaultAWSRegion, "region the aws-kms door signs for (the server's)")
	f.StringVar(&o.vaultMount, "vault-mount", loadgen.DefaultVaultMount, "transit mount of the vault door")
	o.context = addKVFlag(cmd, "context", "encryption context of every item")
	return cmd
}

// benchSetting returns a connection setting: the named flag when it was set
// on the command line, else the environment variable, else the flag's
// default. The flags are the root command's persistent ones and may be
// missing.
func benchSetting(cmd *cobra.Command, flagName, envName string) string {
	fl := cmd.Flag(flagName)
	if fl != nil && fl.Changed {
		return fl.Value.String()
	}
	if v := os.Getenv(envName); v != "" {
		return v
	}
	if fl != nil {
		return fl.Value.String()
	}
	return ""
}

// benchSkipVerify reports whether TLS verification is off: by
// --insecure-skip-verify, the global --tls-skip-verify flag or
// COFFER_SKIP_VERIFY.
func benchSkipVerify(cmd *cobra.Command, local bool) (bool, error) {
	if local {
		return true, nil
	}
	if fl := cmd.Flag("tls-skip-verify"); fl != nil && fl.Changed {
		return fl.Value.String() == "true", nil
	}
	skip, err := client.ParseBoolEnv(os.Getenv(client.EnvSkipVerify))
	if err != nil {
		return false, fmt.Errorf("%s: %w", client.EnvSkipVerify, err)
	}
	return skip, nil
}

func runBench(cmd *cobra.Command, o benchOptions) error {
	stderr := cmd.ErrOrStderr()
	addr := strings.TrimSpace(benchSetting(cmd, "address", client.EnvAddress))
	if addr == "" {
		addr = client.DefaultAddress
	}
	insecure, err := benchSkipVerify(cmd, o.insecure)
	if err != nil {
		return err
	}
	o.json = wantJSON(cmd)
	cfg := loadgen.Config{
		Target:             addr,
		Token:              benchSetting(cmd, "token", client.EnvToken),
		Op:                 loadgen.Op(o.op),
		KeyID:              o.key,
		Context:            o.context.Map(),
		PayloadSize:        o.payloadSize,
		BatchSize:          o.batchSize,
		Concurrency:        o.concurrency,
		Duration:           o.duration,
		Requests:           o.requests,
		Warmup:             o.warmup,
		CAFile:             benchSetting(cmd, "ca-cert", client.EnvCACert),
		InsecureSkipVerify: insecure,
		HTTP1:              o.http1,
		Door:               loadgen.Door(o.door),
		AWSRegion:          o.awsRegion,
		VaultMount:         o.vaultMount,
		AWSAccessKeyID:     os.Getenv(envBenchAWSAccessKeyID),
		AWSSecretAccessKey: os.Getenv(envBenchAWSSecretAccessKey),
	}
	if (cfg.AWSAccessKeyID == "") != (cfg.AWSSecretAccessKey == "") && cfg.Door == loadgen.DoorAWSKMS {
		return usageErrorf("set both %s and %s, or neither (bench then creates a throwaway access key)", envBenchAWSAccessKeyID, envBenchAWSSecretAccessKey)
	}
	makeAccessKey := cfg.Door == loadgen.DoorAWSKMS && cfg.AWSAccessKeyID == ""
	if o.requests > 0 && !cmd.Flags().Changed("duration") {
		cfg.Duration = 0 // -n alone: run until the count is reached
	}
	if o.payloadSize < 1 || o.batchSize < 1 || o.concurrency < 1 {
		return usageErrorf("--payload-size, --batch-size and --concurrency must be at least 1")
	}
	if o.duration == 0 && o.requests == 0 {
		return usageErrorf("give a --duration or a number of --requests")
	}
	check := cfg
	if check.KeyID == "" {
		check.KeyID = "alias/throwaway" // created below, once the rest checks out
	}
	if makeAccessKey {
		check.AWSAccessKeyID, check.AWSSecretAccessKey = "throwaway", "throwaway" // likewise
	}
	if check.Door == loadgen.DoorVault && check.Token == "" {
		check.Token = "from-login" // checked below, once logged in
	}
	if err := check.Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	cmd.SilenceUsage = true

	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.Token == "" {
		// Another credential (an access key, COFFER_ROLE with a token file
		// or a client certificate): log in once through the client and
		// send what it would send.
		hdr, err := benchAuthorization(ctx, cmd, insecure)
		if err != nil {
			return err
		}
		cfg.Authorization = hdr
	}
	if cfg.Door == loadgen.DoorVault && cfg.Token == "" && !strings.HasPrefix(cfg.Authorization, "Bearer ") {
		// The vault door sends a token (a role's session is one), not an
		// access key's Basic credentials.
		return usageErrorf("door vault needs a token (sent as X-Vault-Token): set COFFER_TOKEN or --token, or log in with a role")
	}
	// cleanup runs best effort after the run, not cut short by an
	// interrupt of it.
	cleanup := func(f func(context.Context) error, what string) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := f(dctx); err != nil {
			fmt.Fprintf(stderr, "coffer bench: warning: could not %s: %v\n", what, err)
		}
	}
	if cfg.Op.NeedsKey() && cfg.KeyID == "" {
		req := client.CreateKeyRequest{Description: benchKeyDescription}
		if cfg.Door == loadgen.DoorVault {
			req.Alias = "alias/coffer-bench-" + benchSuffix() // transit names keys by alias
		}
		key, err := loadgen.CreateKey(ctx, cfg, req)
		if err != nil {
			return fmt.Errorf("creating a throwaway key (or pass --key): %w", err)
		}
		cfg.KeyID = key.ID
		if req.Alias != "" {
			cfg.KeyID = req.Alias
			fmt.Fprintf(stderr, "coffer bench: created throwaway key %s (description %q, alias %s); its deletion is scheduled after the run\n", key.ID, benchKeyDescription, req.Alias)
		} else {
			fmt.Fprintf(stderr, "coffer bench: created throwaway key %s (description %q); its deletion is scheduled after the run\n", key.ID, benchKeyDescription)
		}
		defer func() {
			if req.Alias != "" {
				cleanup(func(c context.Context) error { return loadgen.DeleteAlias(c, cfg, req.Alias) }, "delete alias "+req.Alias)
			}
			cleanup(func(c context.Context) error { return loadgen.ScheduleKeyDeletion(c, cfg, key.ID, 7) }, "schedule deletion of key "+key.ID)
		}()
	}
	if makeAccessKey {
		policy := "coffer-bench-" + benchSuffix()
		ak, err := loadgen.CreateAccessKey(ctx, cfg, policy, []string{cfg.KeyID})
		if err != nil {
			return fmt.Errorf("creating a throwaway access key to sign with (or set %s and %s): %w", envBenchAWSAccessKeyID, envBenchAWSSecretAccessKey, err)
		}
		cfg.AWSAccessKeyID, cfg.AWSSecretAccessKey = ak.ID, ak.SecretAccessKey
		fmt.Fprintf(stderr, "coffer bench: created throwaway access key %s (policy %s: encrypt and decrypt with %s); both are deleted after the run\n", ak.ID, policy, cfg.KeyID)
		defer cleanup(func(c context.Context) error { return loadgen.DeleteAccessKey(c, cfg, ak.ID, policy) }, "delete access key "+ak.ID+" and policy "+policy)
	}

	door := ""
	if cfg.Door != loadgen.DoorREST {
		door = " through the " + string(cfg.Door) + " door"
	}
	fmt.Fprintf(stderr, "coffer bench: %s%s against %s, %d workers, %s\n", cfg.Op, door, cfg.Target, cfg.Concurrency, benchBounds(cfg))
	res, err := loadgen.Run(ctx, cfg)
	interrupted := err != nil && ctx.Err() != nil
	if err != nil && !interrupted {
		return err
	}
	if interrupted {
		fmt.Fprintln(stderr, "coffer bench: interrupted; partial result:")
	}
	if err := printBench(cmd, res, o.json); err != nil {
		return err
	}
	switch {
	case interrupted:
		return err
	case res.Ops == 0 && res.Errors > 0:
		return fmt.Errorf("no request succeeded (%d failed): %s", res.Errors, res.FirstError)
	case res.Errors > 0:
		fmt.Fprintf(stderr, "coffer bench: warning: %d of %d requests failed; first: %s\n", res.Errors, res.Ops+res.Errors, res.FirstError)
	}
	return nil
}

// benchAuthorization returns the Authorization header for a credential
// other than a token, or "" when none is set.
func benchAuthorization(ctx context.Context, cmd *cobra.Command, insecure bool) (string, error) {
	s, err := resolveSettings(cmd)
	if err != nil {
		return "", err
	}
	if !resolveCredentials(s).given() {
		return "", nil
	}
	c, err := newClient(cmd, client.WithInsecureSkipVerify(insecure))
	if err != nil {
		return "", err
	}
	hdr, err := c.AuthorizationHeader(ctx)
	if err != nil {
		return "", fmt.Errorf("authenticating: %w", err)
	}
	return hdr, nil
}

// benchBounds describes when a run ends.
func benchBounds(c loadgen.Config) string {
	var parts []string
	if c.Duration > 0 {
		parts = append(parts, c.Duration.String())
	}
	if c.Requests > 0 {
		parts = append(parts, fmt.Sprintf("%d requests", c.Requests))
	}
	s := strings.Join(parts, " or ")
	if c.Warmup > 0 {
		s += fmt.Sprintf(" after a %s warmup", c.Warmup)
	}
	return s
}

func printBench(cmd *cobra.Command, res loadgen.Result, asData bool) error {
	if asData {
		return printData(cmd, res)
	}
	return res.WriteTable(cmd.OutOrStdout())
}

// benchSuffix is a random suffix for the names of throwaway objects.
func benchSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
