package cli

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// Bounds of the byte counts of datakey and random.
const (
	maxRandomBytes  = 1024
	defaultKeyBytes = 32
)

// newKMSCmd builds `coffer kms`.
func newKMSCmd() *cobra.Command {
	cmd := groupCmd("kms", "Encrypt, decrypt and generate data keys and random bytes")
	cmd.Long = `Encrypt, decrypt and generate data keys and random bytes.

Ciphertexts are printed and read as base64 text, so the output of encrypt can
be piped or saved and given back to decrypt. A KEY is a key id or an alias
such as alias/payments. The same --context pairs given to encrypt must be
given to decrypt.`
	cmd.AddCommand(newEncryptCmd(), newDecryptCmd(), newReEncryptCmd(), newDataKeyCmd(), newRandomCmd())
	return cmd
}

// newEncryptCmd builds `coffer kms encrypt`.
func newEncryptCmd() *cobra.Command {
	var key, plaintext, in string
	cmd := &cobra.Command{
		Use:   "encrypt --key KEY [--plaintext STR | --in FILE]",
		Short: "Encrypt data under a key and print the base64 ciphertext",
		Long: `Encrypt data under a key and print the ciphertext as base64. The data is
--plaintext, the contents of --in FILE, or standard input, taken byte for byte
(a trailing newline included).`,
		Example: `  coffer kms encrypt --key alias/app --context tenant=acme --in secret.txt > secret.b64
  printf %s "$SECRET" | coffer kms encrypt --key alias/app`,
		Args: exactArgs(0),
	}
	ctxFlag := addKVFlag(cmd, "context", "encryption context, required again to decrypt")
	cmd.Flags().StringVar(&key, "key", "", "key id or alias/NAME to encrypt under (required)")
	cmd.Flags().StringVar(&plaintext, "plaintext", "", "data to encrypt (visible in ps and the shell history: prefer --in or standard input for secrets)")
	markSecretFlag(cmd.Flags(), "plaintext", "pipe the data on standard input or give --in FILE instead")
	cmd.Flags().StringVar(&in, "in", "", `read the data from FILE ("-" for standard input)`)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if key == "" {
			return usageErrorf("--key is required")
		}
		var data []byte
		switch {
		case cmd.Flags().Changed("plaintext") && in != "":
			return usageErrorf("give either --plaintext or --in, not both")
		case cmd.Flags().Changed("plaintext"):
			data = []byte(plaintext)
		default:
			var err error
			data, err = readInput(cmd, in, "plaintext", "pass --plaintext, --in FILE, or pipe the data on standard input")
			if err != nil {
				return err
			}
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		resp, err := c.Encrypt(cmd.Context(), client.EncryptRequest{KeyID: key, Plaintext: data, Context: ctxFlag.Map()})
		if err != nil {
			return err
		}
		if wantJSON(cmd) {
			return printData(cmd, resp)
		}
		fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(resp.Ciphertext))
		return nil
	}
	return cmd
}

// newDecryptCmd builds `coffer kms decrypt`.
func newDecryptCmd() *cobra.Command {
	var key, in string
	var asBase64 bool
	cmd := &cobra.Command{
		Use:   "decrypt [CIPHERTEXT_B64 | --in FILE]",
		Short: "Decrypt a base64 ciphertext and write the plaintext",
		Long: `Decrypt a ciphertext given as base64: as an argument, in --in FILE, or on
standard input. The plaintext is written to standard output as is (raw
bytes, no newline added), or as base64 with --base64.`,
		Example: `  coffer kms decrypt --in secret.b64
  coffer kms encrypt --key alias/app --plaintext hi | coffer kms decrypt`,
		Args: maxArgs(1, "CIPHERTEXT_B64"),
	}
	ctxFlag := addKVFlag(cmd, "context", "encryption context given to encrypt")
	cmd.Flags().StringVar(&key, "key", "", "fail unless the ciphertext is under this key id or alias")
	cmd.Flags().StringVar(&in, "in", "", `read the base64 ciphertext from FILE ("-" for standard input)`)
	cmd.Flags().BoolVar(&asBase64, "base64", false, "print the plaintext as base64")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ct, err := readCiphertext(cmd, args, in)
		if err != nil {
			return err
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		resp, err := c.Decrypt(cmd.Context(), client.DecryptRequest{Ciphertext: ct, Context: ctxFlag.Map(), KeyID: key})
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		switch {
		case wantJSON(cmd):
			return printData(cmd, resp)
		case asBase64:
			_, err = fmt.Fprintln(w, base64.StdEncoding.EncodeToString(resp.Plaintext))
		default:
			_, err = w.Write(resp.Plaintext)
		}
		return err
	}
	return cmd
}

// newReEncryptCmd builds `coffer kms reencrypt`.
func newReEncryptCmd() *cobra.Command {
	var destKey, in string
	cmd := &cobra.Command{
		Use:   "reencrypt [CIPHERTEXT_B64 | --in FILE]",
		Short: "Re-encrypt a ciphertext under another key or the current key version",
		Long: `Re-encrypt a base64 ciphertext (argument, --in FILE or standard input) without
the plaintext leaving the server: under --dest-key, or under the primary
version of its own key when --dest-key is not given (after a rotation).
Without --dest-context the source context is kept. Prints the new base64
ciphertext.`,
		Example: `  coffer kms reencrypt --in secret.b64 > secret-v2.b64
  coffer kms reencrypt --dest-key alias/new --source-context tenant=acme --in secret.b64`,
		Args: maxArgs(1, "CIPHERTEXT_B64"),
	}
	srcCtx := addKVFlag(cmd, "source-context", "encryption context of the ciphertext")
	dstCtx := addKVFlag(cmd, "dest-context", "encryption context of the new ciphertext (default the source context)")
	cmd.Flags().StringVar(&destKey, "dest-key", "", "key id or alias/NAME to re-encrypt under (default the source key)")
	cmd.Flags().StringVar(&in, "in", "", `read the base64 ciphertext from FILE ("-" for standard input)`)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ct, err := readCiphertext(cmd, args, in)
		if err != nil {
			return err
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		resp, err := c.ReEncrypt(cmd.Context(), client.ReEncryptRequest{
			Ciphertext:         ct,
			SourceContext:      srcCtx.Map(),
			DestinationKeyID:   destKey,
			DestinationContext: dstCtx.Map(),
		})
		if err != nil {
			return err
		}
		if wantJSON(cmd) {
			return printData(cmd, resp)
		}
		fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(resp.Ciphertext))
		return nil
	}
	return cmd
}

// newDataKeyCmd builds `coffer kms datakey`.
func newDataKeyCmd() *cobra.Command {
	var key string
	var n int
	var noPlaintext bool
	cmd := &cobra.Command{
		Use:   "datakey --key KEY",
		Short: "Generate a data key for envelope encryption",
		Long: `Generate a random data key and return it both in plaintext and encrypted
under --key. Encrypt your data locally with the plaintext key, forget it,
and store the encrypted copy beside the data; 'coffer kms decrypt' recovers
the key later. --no-plaintext returns only the encrypted copy.`,
		Example: "  coffer kms datakey --key alias/app\n  coffer kms datakey --key alias/app --bytes 16 --no-plaintext -o json",
		Args:    exactArgs(0),
	}
	ctxFlag := addKVFlag(cmd, "context", "encryption context, required again to decrypt the data key")
	cmd.Flags().StringVar(&key, "key", "", "key id or alias/NAME to encrypt the data key under (required)")
	cmd.Flags().IntVar(&n, "bytes", defaultKeyBytes, fmt.Sprintf("data key length in bytes, 1..%d", maxRandomBytes))
	cmd.Flags().BoolVar(&noPlaintext, "no-plaintext", false, "return only the encrypted data key")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if key == "" {
			return usageErrorf("--key is required")
		}
		if n < 1 || n > maxRandomBytes {
			return usageErrorf("invalid --bytes %d: want 1..%d", n, maxRandomBytes)
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		req := client.DataKeyRequest{KeyID: key, Bytes: n, Context: ctxFlag.Map()}
		var resp *client.DataKeyResponse
		if noPlaintext {
			resp, err = c.GenerateDataKeyWithoutPlaintext(cmd.Context(), req)
		} else {
			resp, err = c.GenerateDataKey(cmd.Context(), req)
		}
		if err != nil {
			return err
		}
		if wantJSON(cmd) {
			return printData(cmd, resp)
		}
		fields := []field{
			{"Key ID", resp.KeyID},
			{"Key version", strconv.FormatUint(uint64(resp.KeyVersion), 10)},
		}
		if !noPlaintext {
			fields = append(fields, field{"Plaintext", base64.StdEncoding.EncodeToString(resp.Plaintext)})
		}
		fields = append(fields, field{"Ciphertext", base64.StdEncoding.EncodeToString(resp.Ciphertext)})
		return printFields(cmd.OutOrStdout(), fields)
	}
	return cmd
}

// newRandomCmd builds `coffer kms random`.
func newRandomCmd() *cobra.Command {
	var n int
	var asHex bool
	cmd := &cobra.Command{
		Use:     "random [--bytes N]",
		Short:   "Print random bytes from the server, as base64 or hex",
		Example: "  coffer kms random --bytes 16 --hex",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || n > maxRandomBytes {
				return usageErrorf("invalid --bytes %d: want 1..%d", n, maxRandomBytes)
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.GenerateRandom(cmd.Context(), client.RandomRequest{Bytes: n})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch {
			case wantJSON(cmd):
				return printData(cmd, resp)
			case asHex:
				fmt.Fprintln(w, hex.EncodeToString(resp.Random))
			default:
				fmt.Fprintln(w, base64.StdEncoding.EncodeToString(resp.Random))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&n, "bytes", defaultKeyBytes, fmt.Sprintf("number of bytes, 1..%d", maxRandomBytes))
	cmd.Flags().BoolVar(&asHex, "hex", false, "print hex instead of base64")
	return cmd
}
