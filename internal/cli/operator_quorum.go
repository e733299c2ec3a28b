package cli

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/credential"
)

// This file holds the commands a quorum of shares authorises on a running
// server: generate-root (a new root token, one-time-pad encoded), rekey
// (new unseal or recovery shares) and migrate-seal (move the root key to
// another seal). Each takes one share per invocation, so each share
// holder runs the command on their own machine; the share comes from a
// prompt without echo, standard input or --in FILE, never an argument.

// maxOTPLength bounds the one-time pad length a server may ask for; a
// token is a few dozen bytes.
const maxOTPLength = 1024

// shareHint says how to give a share to the commands of this file.
const shareHint = "type it at the prompt on a terminal, pipe it on standard input, or give --in FILE"

// addShareInFlag gives a share-submitting command --in FILE.
func addShareInFlag(cmd *cobra.Command, in *string) {
	cmd.Flags().StringVar(in, "in", "", "read the share from FILE (one line; - is standard input) instead of a prompt")
}

// readOneShare reads the share of a submission and refuses an empty one.
func readOneShare(cmd *cobra.Command, inFile string) (string, error) {
	share, err := readShare(cmd, inFile, "share", shareHint)
	if err != nil {
		return "", err
	}
	if share == "" {
		return "", usageErrorf("empty share: %s", shareHint)
	}
	return share, nil
}

// requireNonce checks that --nonce was given.
func requireNonce(nonce, what string) error {
	if strings.TrimSpace(nonce) == "" {
		return usageErrorf("--nonce is required: the nonce 'coffer operator %s init' printed ('coffer operator %s status' shows it)", what, what)
	}
	return nil
}

// newOperatorGenerateRootCmd builds `coffer operator generate-root`.
func newOperatorGenerateRootCmd() *cobra.Command {
	cmd := groupCmd("generate-root", "Make a new root token from a quorum of unseal or recovery shares")
	cmd.Long = `Make a new root token, for when the root token is lost, from a quorum of the
unseal shares (Shamir) or the recovery shares (auto-unseal). No token is
needed: the shares are the authorisation.

  1. One operator runs 'generate-root init --otp-out otp.txt': it makes a
     random one-time pad (OTP), keeps it in otp.txt, starts the attempt and
     prints its nonce and the OTP fingerprint.
  2. Each share holder runs 'generate-root submit --nonce NONCE
     --fingerprint FP', with the fingerprint the starter told them, and
     types their share. A fingerprint that differs means someone else
     started the attempt with their own pad: the share is not sent.
  3. The last submission prints the new token XORed with the pad; only
     the holder of otp.txt can read it, with 'generate-root decode'.

A share that does not belong to this server ends the attempt.`
	cmd.Example = "  coffer operator generate-root init --otp-out otp.txt\n" +
		"  coffer operator generate-root submit --nonce NONCE --fingerprint FP\n" +
		"  coffer operator generate-root decode --encoded ENCODED --otp-file otp.txt"
	cmd.AddCommand(newGenerateRootInitCmd(), newGenerateRootSubmitCmd(), newGenerateRootStatusCmd(),
		newGenerateRootCancelCmd(), newGenerateRootDecodeCmd())
	return cmd
}

// generateRootStarted is what `generate-root init` prints: the attempt,
// and the pad (when it was not written to a file) or the file it is in.
type generateRootStarted struct {
	client.GenerateRootStatus
	OTP     string `json:"otp,omitempty"`
	OTPFile string `json:"otp_file,omitempty"`
}

// newGenerateRootInitCmd builds `coffer operator generate-root init`.
func newGenerateRootInitCmd() *cobra.Command {
	var otpOut string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Start a generate-root attempt with a new one-time pad",
		Long: `Start a generate-root attempt. A random one-time pad (OTP) as long as a token
is made here (crypto/rand) and written to --otp-out FILE (mode 0600; an
existing file is never overwritten), or printed when --otp-out is not given.
Keep it: it is the only way to read the new token. The server keeps only the
pad of the attempt in memory, and shows its fingerprint, which you tell the
share holders so that they can check they serve your attempt.`,
		Example: "  coffer operator generate-root init --otp-out otp.txt",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if otpOut != "" && otpOut != "-" {
				if _, err := os.Lstat(otpOut); err == nil {
					return fmt.Errorf("%s exists: the one-time pad is never written over a file; remove it or choose another --otp-out", otpOut)
				}
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.GenerateRootStatus(cmd.Context())
			if err != nil {
				return err
			}
			if st.Started {
				return fmt.Errorf("a generate-root attempt started at %s is in progress (%d of %d shares, OTP fingerprint %s): "+
					"serve it with 'coffer operator generate-root submit', or cancel it first with 'coffer operator generate-root cancel'",
					fmtTime(st.StartedAt), st.Progress, st.Required, st.OTPFingerprint)
			}
			if st.OTPLength < 1 || st.OTPLength > maxOTPLength {
				return fmt.Errorf("the server asks for a one-time pad of %d bytes; want 1..%d: is it a Coffer server?", st.OTPLength, maxOTPLength)
			}
			pad := make([]byte, st.OTPLength)
			defer clear(pad)
			if _, err := rand.Read(pad); err != nil {
				return fmt.Errorf("making the one-time pad: %w", err)
			}
			otp := base64.StdEncoding.EncodeToString(pad)
			out := generateRootStarted{}
			if otpOut != "" && otpOut != "-" {
				if err := writeNewSecretFile(otpOut, []byte(otp+"\n")); err != nil {
					return err
				}
				out.OTPFile = otpOut
			} else {
				out.OTP = otp
			}
			started, err := c.GenerateRootStart(cmd.Context(), otp)
			if err != nil {
				if out.OTPFile != "" {
					// The pad of an attempt that did not start is of no use.
					_ = os.Remove(out.OTPFile)
				}
				return err
			}
			out.GenerateRootStatus = *started
			if wantJSON(cmd) {
				return printData(cmd, out)
			}
			fields := []field{
				{"Nonce", started.Nonce},
				{"Started", fmtTime(started.StartedAt)},
				{"Required shares", strconv.Itoa(started.Required)},
				{"OTP fingerprint", started.OTPFingerprint},
			}
			if out.OTPFile != "" {
				fields = append(fields, field{"OTP file", out.OTPFile})
			} else {
				fields = append(fields, field{"OTP", out.OTP})
			}
			w := cmd.OutOrStdout()
			if err := printFields(w, fields); err != nil {
				return err
			}
			where := out.OTPFile
			if where == "" {
				where = "a file of mode 0600 (the OTP above)"
			}
			fmt.Fprintf(w, "\nGenerate-root attempt started; shares needed: %d. Tell each share holder the\nnonce and the OTP fingerprint; each runs\n"+
				"  coffer operator generate-root submit --nonce %s --fingerprint %s\nKeep the OTP in %s: the new token can only be read with it\n(coffer operator generate-root decode).\n",
				started.Required, started.Nonce, started.OTPFingerprint, where)
			return nil
		},
	}
	cmd.Flags().StringVar(&otpOut, "otp-out", "", "write the one-time pad to FILE (mode 0600, must not exist) instead of printing it")
	return cmd
}

// writeNewSecretFile writes data to a new file of mode 0600, refusing an
// existing one (O_EXCL also refuses a symbolic link planted there).
func writeNewSecretFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: the one-time pad is never written over a file; remove it or choose another --otp-out", path)
		}
		return fmt.Errorf("creating %s: %w", path, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, werr)
	}
	return nil
}

// newGenerateRootSubmitCmd builds `coffer operator generate-root submit`.
func newGenerateRootSubmitCmd() *cobra.Command {
	var nonce, fingerprint, in string
	cmd := &cobra.Command{
		Use:   "submit --nonce NONCE",
		Short: "Submit one unseal or recovery share to the generate-root attempt",
		Long: `Submit one share to the generate-root attempt with --nonce. The share is read
from the terminal without echo, one line of standard input, or --in FILE.
The attempt's OTP fingerprint and start time are shown first; with
--fingerprint (the one the starter told you) a different one is refused
before your share is sent. The last share prints the encoded token.`,
		Example: "  coffer operator generate-root submit --nonce NONCE --fingerprint FP\n" +
			"  coffer operator generate-root submit --nonce NONCE --in share.txt",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireNonce(nonce, "generate-root"); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.GenerateRootStatus(cmd.Context())
			if err != nil {
				return err
			}
			if !st.Started {
				return errors.New("no generate-root attempt is in progress: it was cancelled, completed or ended by a wrong share; start one with 'coffer operator generate-root init'")
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Generate-root attempt started %s, OTP fingerprint %s, %d of %d shares in.\n",
				fmtTime(st.StartedAt), st.OTPFingerprint, st.Progress, st.Required)
			if fp := strings.ToLower(strings.TrimSpace(fingerprint)); fp != "" {
				if subtle.ConstantTimeCompare([]byte(fp), []byte(strings.ToLower(st.OTPFingerprint))) != 1 {
					return fmt.Errorf("the attempt in progress has OTP fingerprint %s, not %s: it is not the attempt you were told about, "+
						"so your share was not sent. Ask whoever started it; if nobody did, cancel it with 'coffer operator generate-root cancel'",
						st.OTPFingerprint, fingerprint)
				}
			} else {
				fmt.Fprintln(cmd.ErrOrStderr(), "Check that fingerprint with whoever started the attempt before you submit (--fingerprint checks it for you).")
			}
			share, err := readOneShare(cmd, in)
			if err != nil {
				return err
			}
			res, err := c.GenerateRootSubmit(cmd.Context(), nonce, share)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, res)
			}
			w := cmd.OutOrStdout()
			if !res.Complete {
				fmt.Fprintf(w, "Generate-root progress: %d/%d\n", res.Progress, res.Required)
				return nil
			}
			if err := printFields(w, []field{{"Encoded token", res.EncodedToken}}); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nA new root token was generated. It is encoded with the attempt's one-time pad;\ndecode it with\n"+
				"  coffer operator generate-root decode --encoded %s --otp-file OTP_FILE\n", res.EncodedToken)
			return nil
		},
	}
	cmd.Flags().StringVar(&nonce, "nonce", "", "the nonce of the attempt (required)")
	cmd.Flags().StringVar(&fingerprint, "fingerprint", "", "refuse unless the attempt's OTP fingerprint is this one")
	addShareInFlag(cmd, &in)
	return cmd
}

// newGenerateRootStatusCmd builds `coffer operator generate-root status`.
func newGenerateRootStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the generate-root attempt in progress",
		Example: "  coffer operator generate-root status -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.GenerateRootStatus(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, st)
			}
			fields := []field{{"Started", strconv.FormatBool(st.Started)}}
			if st.Started {
				fields = append(fields,
					field{"Nonce", st.Nonce},
					field{"Started at", fmtTime(st.StartedAt)},
					field{"Progress", fmt.Sprintf("%d/%d", st.Progress, st.Required)},
					field{"OTP fingerprint", orDash(st.OTPFingerprint)})
			} else {
				fields = append(fields, field{"Required shares", strconv.Itoa(st.Required)})
			}
			fields = append(fields, field{"OTP length", strconv.Itoa(st.OTPLength)})
			return printFields(cmd.OutOrStdout(), fields)
		},
	}
}

// newGenerateRootCancelCmd builds `coffer operator generate-root cancel`.
func newGenerateRootCancelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel",
		Short: "Cancel the generate-root attempt in progress",
		Long: `Cancel the generate-root attempt in progress and discard the shares submitted
to it. It asks for confirmation on a terminal; --yes confirms in scripts.`,
		Example: "  coffer operator generate-root cancel --yes",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := confirm(cmd, "cancel the generate-root attempt in progress and discard the shares submitted to it"); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.GenerateRootCancel(cmd.Context()); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintln(cmd.OutOrStdout(), "Generate-root attempt cancelled (if one was in progress)")
			}
			return nil
		},
	}
	addYesFlag(cmd)
	return cmd
}

// decodedRoot is what `generate-root decode -o json` prints.
type decodedRoot struct {
	RootToken string `json:"root_token"`
}

// newGenerateRootDecodeCmd builds `coffer operator generate-root decode`.
func newGenerateRootDecodeCmd() *cobra.Command {
	var encoded, otpFile string
	cmd := &cobra.Command{
		Use:   "decode --encoded ENCODED --otp-file FILE",
		Short: "Decode the token a generate-root attempt returned, with its one-time pad",
		Long: `Decode the encoded token the last 'generate-root submit' printed: it is the new
root token XORed with the attempt's one-time pad, which is read from
--otp-file (- reads it from standard input). The encoded token alone reveals
nothing. No server is contacted.`,
		Example: "  coffer operator generate-root decode --encoded ENCODED --otp-file otp.txt",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(encoded) == "" {
				return usageErrorf("--encoded is required: the encoded token the last 'generate-root submit' printed")
			}
			if otpFile == "" {
				return usageErrorf("--otp-file is required: the file 'generate-root init --otp-out' wrote (- reads the pad from standard input)")
			}
			data, err := readInput(cmd, otpFile, "one-time pad", "give --otp-file FILE")
			if err != nil {
				return err
			}
			defer clear(data)
			tok, err := decodeRootToken(encoded, data)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, decodedRoot{RootToken: tok})
			}
			return printFields(cmd.OutOrStdout(), []field{{"Root token", tok}})
		},
	}
	cmd.Flags().StringVar(&encoded, "encoded", "", "the encoded token (required)")
	cmd.Flags().StringVar(&otpFile, "otp-file", "", "file holding the one-time pad (required; - is standard input)")
	return cmd
}

// decodeRootToken reverses the one-time-pad encoding of a generated root
// token: both are standard base64 of the same length, and the XOR must be a
// well-formed token, which a wrong pad almost never gives.
func decodeRootToken(encoded string, otp []byte) (string, error) {
	enc, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return "", errors.New("the encoded token is not standard base64: copy it exactly as 'generate-root submit' printed it")
	}
	defer clear(enc)
	pad, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(otp)))
	if err != nil {
		return "", errors.New("the one-time pad is not standard base64: give the file 'generate-root init --otp-out' wrote")
	}
	defer clear(pad)
	if len(pad) == 0 || len(enc) != len(pad) {
		return "", fmt.Errorf("the encoded token has %d bytes but the pad %d: is this the pad of this attempt?", len(enc), len(pad))
	}
	subtle.XORBytes(enc, enc, pad)
	tok := string(enc)
	if !credential.Valid(credential.TokenPrefix, tok) {
		return "", errors.New("decoding gave no valid token: the pad is not the one this attempt was started with")
	}
	return tok, nil
}

// newOperatorRekeyCmd builds `coffer operator rekey`.
func newOperatorRekeyCmd() *cobra.Command {
	cmd := groupCmd("rekey", "Replace the unseal or recovery shares with new ones")
	cmd.Long = `Replace the unseal shares (Shamir) or the recovery shares (auto-unseal) with
a new set, of new counts, authorised by a quorum of the current ones. The root
key and the data do not change; the old shares stop working.

  1. One operator runs 'rekey init --shares N --threshold T' and tells the
     share holders the nonce.
  2. Each holder of a current share runs 'rekey submit --nonce NONCE'.
  3. The last submission prints the new shares, once.

A share that does not belong to this server ends the attempt.`
	cmd.Example = "  coffer operator rekey init --shares 5 --threshold 3\n  coffer operator rekey submit --nonce NONCE"
	cmd.AddCommand(newRekeyInitCmd(), newRekeySubmitCmd(), newRekeyStatusCmd(), newRekeyCancelCmd())
	return cmd
}

// checkShareCounts validates share counts given as flags.
func checkShareCounts(shares, threshold int) error {
	if shares < 1 || shares > maxShares {
		return usageErrorf("invalid --shares %d: want 1..%d", shares, maxShares)
	}
	if threshold < 1 || threshold > shares {
		return usageErrorf("invalid --threshold %d: want 1..%d (at most --shares)", threshold, shares)
	}
	return nil
}

// newRekeyInitCmd builds `coffer operator rekey init`.
func newRekeyInitCmd() *cobra.Command {
	var shares, threshold int
	cmd := &cobra.Command{
		Use:     "init --shares N --threshold T",
		Short:   "Start a rekey attempt for N new shares of threshold T",
		Example: "  coffer operator rekey init --shares 5 --threshold 3",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("shares") || !cmd.Flags().Changed("threshold") {
				return usageErrorf("--shares and --threshold are required: the counts of the new shares")
			}
			if err := checkShareCounts(shares, threshold); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.RekeyStart(cmd.Context(), client.RekeyRequest{Shares: shares, Threshold: threshold})
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, st)
			}
			w := cmd.OutOrStdout()
			if err := printFields(w, []field{
				{"Nonce", st.Nonce},
				{"Shares", st.Kind},
				{"Required shares", strconv.Itoa(st.Required)},
				{"New shares", strconv.Itoa(st.NewShares)},
				{"New threshold", strconv.Itoa(st.NewThreshold)},
			}); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nRekey attempt started; current %[2]s shares needed: %[1]d. Each holder runs\n  coffer operator rekey submit --nonce %[3]s\n",
				st.Required, st.Kind, st.Nonce)
			return nil
		},
	}
	cmd.Flags().IntVar(&shares, "shares", 0, "number of new shares (required)")
	cmd.Flags().IntVar(&threshold, "threshold", 0, "number of new shares needed (required)")
	return cmd
}

// newRekeySubmitCmd builds `coffer operator rekey submit`.
func newRekeySubmitCmd() *cobra.Command {
	var nonce, in string
	cmd := &cobra.Command{
		Use:   "submit --nonce NONCE",
		Short: "Submit one current share to the rekey attempt",
		Long: `Submit one current share to the rekey attempt with --nonce. The share is read
from the terminal without echo, one line of standard input, or --in FILE.
The last share prints the new shares, once; the old ones stop working.`,
		Example: "  coffer operator rekey submit --nonce NONCE\n  coffer operator rekey submit --nonce NONCE --in share.txt",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireNonce(nonce, "rekey"); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.RekeyStatus(cmd.Context())
			if err != nil {
				return err
			}
			if !st.Started {
				return errors.New("no rekey attempt is in progress: it was cancelled, completed or ended by a wrong share; start one with 'coffer operator rekey init'")
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Rekey attempt: %d new %s shares with a threshold of %d; %d of %d current shares in.\n",
				st.NewShares, st.Kind, st.NewThreshold, st.Progress, st.Required)
			share, err := readOneShare(cmd, in)
			if err != nil {
				return err
			}
			res, err := c.RekeySubmit(cmd.Context(), nonce, share)
			if err != nil {
				return err
			}
			if !res.Complete {
				if wantJSON(cmd) {
					return printData(cmd, res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Rekey progress: %d/%d\n", res.Progress, res.Required)
				return nil
			}
			return printNewShares(cmd, res, res.Kind, res.Shares, res.NewThreshold)
		},
	}
	cmd.Flags().StringVar(&nonce, "nonce", "", "the nonce of the attempt (required)")
	addShareInFlag(cmd, &in)
	return cmd
}

// printNewShares prints v (the full answer, for -o json|yaml) or the new
// shares of kind ("unseal" or "recovery") with the warning that they are
// shown once and replace the old ones.
func printNewShares(cmd *cobra.Command, v any, kind string, shares []string, threshold int) error {
	warning := fmt.Sprintf("The new %s shares are shown only once, and the old ones no longer work.\n"+
		"Store each share safely, apart from the others.", kind)
	if wantJSON(cmd) {
		fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: "+warning)
		return printData(cmd, v)
	}
	label := "Unseal share"
	if kind == "recovery" {
		label = "Recovery share"
	}
	w := cmd.OutOrStdout()
	if err := printFields(w, shareFields(label, shares)); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d new %s shares with a threshold of %d replace the old ones.\n\nWARNING: %s\n", len(shares), kind, threshold, warning)
	return nil
}

// newRekeyStatusCmd builds `coffer operator rekey status`.
func newRekeyStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the rekey attempt in progress",
		Example: "  coffer operator rekey status -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.RekeyStatus(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, st)
			}
			fields := []field{{"Started", strconv.FormatBool(st.Started)}, {"Shares", orDash(st.Kind)}}
			if st.Started {
				fields = append(fields,
					field{"Nonce", st.Nonce},
					field{"Progress", fmt.Sprintf("%d/%d", st.Progress, st.Required)},
					field{"New shares", strconv.Itoa(st.NewShares)},
					field{"New threshold", strconv.Itoa(st.NewThreshold)})
			} else {
				fields = append(fields, field{"Required shares", strconv.Itoa(st.Required)})
			}
			return printFields(cmd.OutOrStdout(), fields)
		},
	}
}

// newRekeyCancelCmd builds `coffer operator rekey cancel`.
func newRekeyCancelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel",
		Short: "Cancel the rekey attempt in progress",
		Long: `Cancel the rekey attempt in progress and discard the shares submitted to it;
the current shares stay. It asks for confirmation on a terminal; --yes
confirms in scripts.`,
		Example: "  coffer operator rekey cancel --yes",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := confirm(cmd, "cancel the rekey attempt in progress and discard the shares submitted to it"); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.RekeyCancel(cmd.Context()); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintln(cmd.OutOrStdout(), "Rekey attempt cancelled (if one was in progress)")
			}
			return nil
		},
	}
	addYesFlag(cmd)
	return cmd
}

// newOperatorMigrateSealCmd builds `coffer operator migrate-seal`.
func newOperatorMigrateSealCmd() *cobra.Command {
	var shares, threshold int
	var reset bool
	var in string
	cmd := &cobra.Command{
		Use:   "migrate-seal",
		Short: "Submit one current share toward a pending seal migration",
		Long: `Move the root key from the seal that protects it to the seal the server is
now configured with: Shamir <-> pkcs11 <-> tpm2 <-> transit. Configure the new
seal (and, when leaving an auto-unseal, the old one as previous_seal) and
restart the server: it stays sealed with a migration pending ('coffer
operator status'). Then a quorum of the current shares -- unseal shares, or
recovery shares when the store is under an auto-unseal -- is submitted here,
one per invocation. The new protection is checked before anything is
written, and everything is committed at once: until then the old seal keeps
working.

Migrating to Shamir prints new unseal shares, and migrating from Shamir to an
auto-unseal new recovery shares, --shares of them with a threshold of
--threshold (default: the current counts); every submission of one migration
must give the same counts. --reset discards the shares submitted so far.`,
		Example: "  coffer operator migrate-seal\n  coffer operator migrate-seal --shares 5 --threshold 3 --in share.txt\n  coffer operator migrate-seal --reset",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			counts := cmd.Flags().Changed("shares") || cmd.Flags().Changed("threshold")
			if reset && (counts || in != "") {
				return usageErrorf("--reset takes no share and no --shares or --threshold")
			}
			if counts {
				if !cmd.Flags().Changed("shares") || !cmd.Flags().Changed("threshold") {
					return usageErrorf("give both --shares and --threshold, or neither to keep the current counts")
				}
				if err := checkShareCounts(shares, threshold); err != nil {
					return err
				}
			}
			req := client.MigrateSealRequest{Reset: reset, Shares: shares, Threshold: threshold}
			if !reset {
				share, err := readOneShare(cmd, in)
				if err != nil {
					return err
				}
				req.Share = share
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			res, err := c.MigrateSeal(cmd.Context(), req)
			if err != nil {
				return err
			}
			if res.Complete {
				return printMigrated(cmd, res)
			}
			if wantJSON(cmd) {
				return printData(cmd, res)
			}
			w := cmd.OutOrStdout()
			switch {
			case reset:
				fmt.Fprintf(w, "Migration progress reset: %d/%d\n", res.Progress, sealQuorum(&res.SealStatus))
			default:
				fmt.Fprintf(w, "Migration progress: %d/%d\n", res.Progress, sealQuorum(&res.SealStatus))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&shares, "shares", 0, "number of new unseal shares (to Shamir) or recovery shares (from Shamir); default: the current count")
	cmd.Flags().IntVar(&threshold, "threshold", 0, "threshold of the new shares; default: the current one")
	cmd.Flags().BoolVar(&reset, "reset", false, "discard the shares submitted so far")
	addShareInFlag(cmd, &in)
	return cmd
}

// printMigrated prints the answer to the share that completed a seal
// migration: the new seal, and the new shares when it made some.
func printMigrated(cmd *cobra.Command, res *client.MigrateSealResponse) error {
	msg := fmt.Sprintf("Seal migration complete: the root key is now protected by %s, and the server is unsealed.", res.Type)
	switch {
	case len(res.Shares) > 0:
		fmt.Fprintln(cmd.ErrOrStderr(), msg)
		return printNewShares(cmd, res, "unseal", res.Shares, res.Threshold)
	case len(res.RecoveryShares) > 0:
		fmt.Fprintln(cmd.ErrOrStderr(), msg+" The old unseal shares are now of no use.")
		return printNewShares(cmd, res, "recovery", res.RecoveryShares, res.RecoveryThreshold)
	}
	if wantJSON(cmd) {
		return printData(cmd, res)
	}
	fmt.Fprintln(cmd.OutOrStdout(), msg+" The recovery shares stay the same.")
	return nil
}
