package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cofferkms/coffer/envelope"
)

// Envelope encryption: coffer encrypt, decrypt and inspect work on files
// locally (package envelope); only the 32-byte data key travels to Coffer.

// progressMinBytes is the input size from which a terminal shows progress.
const progressMinBytes = 64 << 20

// fileFlags are the input and output flags of encrypt and decrypt.
type fileFlags struct {
	output string
	force  bool
}

// add defines --out and --force. -o is the output format, as everywhere:
// with -o json or yaml the command prints a summary of what it wrote to
// --out, which it then requires.
func (f *fileFlags) add(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.output, "out", "", "write the "+what+" to `FILE` (default standard output)")
	cmd.Flags().BoolVar(&f.force, "force", false, "overwrite the output file if it exists")
}

// check refuses -o json or yaml without --out: the summary and the data
// would share standard output.
func (f *fileFlags) check(cmd *cobra.Command) error {
	if wantJSON(cmd) && (f.output == "" || f.output == "-") {
		return usageErrorf("-o %s prints a summary and needs --out FILE for the data", outputFormat(cmd))
	}
	return nil
}

// fileSummary is what encrypt and decrypt print with -o json or yaml.
type fileSummary struct {
	In                string            `json:"in"`
	Out               string            `json:"out"`
	Bytes             int64             `json:"bytes"`
	KeyID             string            `json:"key_id,omitempty"`
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// inName names the input of args for a summary.
func inName(args []string) string {
	if len(args) == 0 {
		return "-"
	}
	return args[0]
}

// newEnvelopeEncryptCmd builds `coffer encrypt`.
func newEnvelopeEncryptCmd() *cobra.Command {
	var key string
	var recovery []string
	var segSize int
	var ff fileFlags
	cmd := &cobra.Command{
		Use:   "encrypt --key KEY [--context K=V]... [--out FILE] [IN | -]",
		Short: "Encrypt a file locally under a data key wrapped by Coffer",
		Long: `Encrypt a file (or standard input) on this machine with a fresh data key
that Coffer generates and wraps under --key: only the wrapped 32-byte key
travels to the server, the data never does. The output is a Coffer envelope
file (docs/formats.md): its header holds the wrapped key and the --context
pairs, which are bound to the file and shown by 'coffer inspect'.

--recovery-key wraps the same data key under more keys, so that the file can
also be decrypted with any of them (disaster recovery).

The output goes to --out FILE (written to a temporary file and renamed at
the end; an existing file is kept unless --force) or to standard output,
which must not be a terminal. With -o json or yaml (and --out) a summary of
what was written is printed.`,
		Example: `  coffer encrypt --key alias/backups --context host=db1 --out db1.sql.cfe db1.sql
  pg_dump app | coffer encrypt --key alias/backups > app.sql.cfe`,
		Args: maxArgs(1, "IN"),
	}
	ctxFlag := addKVFlag(cmd, "context", "encryption context, stored in the header and bound to the file")
	cmd.Flags().StringVar(&key, "key", "", "key id or alias/NAME that wraps the data key (required)")
	cmd.Flags().StringArrayVar(&recovery, "recovery-key", nil, "also wrap the data key under `KEY` (repeatable)")
	cmd.Flags().IntVar(&segSize, "segment-size", envelope.DefaultSegmentSize,
		fmt.Sprintf("plaintext bytes per segment, %d..%d", envelope.MinSegmentSize, envelope.MaxSegmentSize))
	ff.add(cmd, "encrypted file")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if key == "" {
			return usageErrorf("--key is required")
		}
		if segSize < envelope.MinSegmentSize || segSize > envelope.MaxSegmentSize {
			return usageErrorf("invalid --segment-size %d: want %d..%d", segSize, envelope.MinSegmentSize, envelope.MaxSegmentSize)
		}
		if err := ff.check(cmd); err != nil {
			return err
		}
		in, size, err := openInput(cmd, args, "plaintext")
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := createOutput(cmd, ff, false)
		if err != nil {
			return err
		}
		defer out.abort()

		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		var w envelope.Wrapper = envelope.NewCoffer(c, key)
		if len(recovery) > 0 {
			ws := []envelope.Wrapper{w}
			for _, k := range recovery {
				ws = append(ws, envelope.NewCoffer(c, k))
			}
			w = envelope.Multi(ws...)
		}
		cw := &countWriter{w: out.w}
		enc, err := envelope.Encrypt(cw, w, &envelope.EncryptOptions{
			Context:           cmd.Context(),
			EncryptionContext: ctxFlag.Map(),
			SegmentSize:       segSize,
		})
		if err != nil {
			return err
		}
		src := withProgress(cmd, ctxReader{cmd.Context(), in}, size, "encrypting")
		defer stopProgress(src)
		if _, err := io.Copy(enc, src); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		finishProgress(src)
		if err := out.commit(); err != nil {
			return err
		}
		if wantJSON(cmd) {
			return printData(cmd, fileSummary{In: inName(args), Out: ff.output, Bytes: cw.n, KeyID: key, EncryptionContext: ctxFlag.Map()})
		}
		return nil
	}
	return cmd
}

// newEnvelopeDecryptCmd builds `coffer decrypt`.
func newEnvelopeDecryptCmd() *cobra.Command {
	var ff fileFlags
	cmd := &cobra.Command{
		Use:   "decrypt [--context K=V]... [--out FILE] [IN | -]",
		Short: "Decrypt a file made by 'coffer encrypt'",
		Long: `Decrypt a Coffer envelope file (or standard input): Coffer unwraps the data
key named in the header, bound to the header's encryption context, and the
data is decrypted on this machine. Every segment is authenticated before its
plaintext is written; a truncated, altered or extended file is an error.

With --out FILE the plaintext is written to a temporary file (mode 0600) that is
renamed to FILE only when the whole file has authenticated, and deleted on
failure, so no partial plaintext is left behind. On standard output the
authenticated segments before a failure have already been written; the exit
code says whether the file was whole.

--context pairs, when given, must be exactly the file's encryption context.`,
		Example: `  coffer decrypt --out db1.sql db1.sql.cfe
  coffer decrypt < app.sql.cfe | psql app`,
		Args: maxArgs(1, "IN"),
	}
	ctxFlag := addKVFlag(cmd, "context", "require the file's encryption context to be exactly these pairs")
	ff.add(cmd, "plaintext")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := ff.check(cmd); err != nil {
			return err
		}
		in, size, err := openInput(cmd, args, "envelope file")
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := createOutput(cmd, ff, true)
		if err != nil {
			return err
		}
		defer out.abort()

		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		opts := &envelope.DecryptOptions{Context: cmd.Context()}
		if cmd.Flags().Changed("context") {
			opts.EncryptionContext = ctxFlag.Map()
		}
		src := withProgress(cmd, ctxReader{cmd.Context(), in}, size, "decrypting")
		defer stopProgress(src)
		dec, err := envelope.DecryptWithOptions(src, opts, envelope.NewCoffer(c, ""))
		if err != nil {
			return decryptError(err)
		}
		n, err := io.Copy(out.w, dec)
		if err != nil {
			return decryptError(err)
		}
		finishProgress(src)
		if err := out.commit(); err != nil {
			return err
		}
		if wantJSON(cmd) {
			return printData(cmd, fileSummary{In: inName(args), Out: ff.output, Bytes: n})
		}
		return nil
	}
	return cmd
}

// decryptError adds a hint to the errors of a bad file.
func decryptError(err error) error {
	switch {
	case errors.Is(err, envelope.ErrVersion):
		return err
	case errors.Is(err, envelope.ErrNotEnvelope), errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrTruncated):
		return fmt.Errorf("%w (check the file with 'coffer inspect')", err)
	}
	return err
}

// inspectInfo is the JSON output of inspect.
type inspectInfo struct {
	Format            string            `json:"format"`
	Version           int               `json:"version"`
	Algorithm         string            `json:"algorithm"`
	SegmentSize       int               `json:"segment_size"`
	HeaderSize        int64             `json:"header_size"`
	FileSize          int64             `json:"file_size"`
	PlaintextSize     *int64            `json:"plaintext_size,omitempty"`
	Segments          int64             `json:"segments,omitempty"`
	SizeError         string            `json:"size_error,omitempty"`
	EncryptionContext map[string]string `json:"encryption_context"`
	WrappedKeys       []inspectKey      `json:"wrapped_keys"`
}

type inspectKey struct {
	Type        string `json:"type"`
	KeyID       string `json:"key_id"`
	KeyVersion  uint32 `json:"key_version"`
	WrappedSize int    `json:"wrapped_size"`
}

// newInspectCmd builds `coffer inspect`.
func newInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Describe a Coffer envelope file without decrypting it",
		Long: `Print the header of a file made by 'coffer encrypt': the format, the wrapped
data keys and the Coffer keys that wrap them, the encryption context, and the
sizes. Nothing is decrypted and no server is contacted. The header is not
authenticated without the key, so treat what it says as a claim until the
file decrypts.`,
		Example: "  coffer inspect db1.sql.cfe\n  coffer inspect -o json db1.sql.cfe",
		Args:    exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			h, err := envelope.ReadHeader(f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			info := inspectInfo{
				Format: "coffer envelope", Version: h.Version, Algorithm: h.Algorithm,
				SegmentSize: h.SegmentSize, HeaderSize: h.Size, FileSize: st.Size(),
				EncryptionContext: h.EncryptionContext, WrappedKeys: []inspectKey{},
			}
			if info.EncryptionContext == nil {
				info.EncryptionContext = map[string]string{}
			}
			if n, err := h.PlaintextSize(st.Size()); err != nil {
				info.SizeError = err.Error()
			} else {
				info.PlaintextSize = &n
				info.Segments = max(1, (n+int64(h.SegmentSize)-1)/int64(h.SegmentSize))
			}
			for _, s := range h.Stanzas {
				info.WrappedKeys = append(info.WrappedKeys, inspectKey{s.Type, s.KeyID, s.KeyVersion, len(s.Body)})
			}
			if wantJSON(cmd) {
				return printData(cmd, info)
			}
			plain := "unknown: " + info.SizeError
			if info.PlaintextSize != nil {
				plain = fmt.Sprintf("%d bytes in %d segments", *info.PlaintextSize, info.Segments)
			}
			fields := []field{
				{"Format", fmt.Sprintf("coffer envelope v%d, %s", h.Version, h.Algorithm)},
				{"Segment size", strconv.Itoa(h.SegmentSize)},
				{"Header size", fmt.Sprintf("%d bytes", h.Size)},
				{"File size", fmt.Sprintf("%d bytes", st.Size())},
				{"Plaintext size", plain},
				{"Context", fmtMap(h.EncryptionContext)},
			}
			for i, k := range info.WrappedKeys {
				fields = append(fields, field{fmt.Sprintf("Wrapped key %d", i+1),
					fmt.Sprintf("%s key %s version %d (%d bytes)", k.Type, k.KeyID, k.KeyVersion, k.WrappedSize)})
			}
			return printFields(cmd.OutOrStdout(), fields)
		},
	}
}

// openInput opens the file named by args, or standard input for none or
// "-", and returns its size when known (-1 otherwise).
func openInput(cmd *cobra.Command, args []string, what string) (io.ReadCloser, int64, error) {
	if len(args) == 0 || args[0] == "-" {
		if _, tty := stdinIsTerminal(cmd); tty {
			return nil, 0, usageErrorf("no %s given: name a file, or pipe it on standard input", what)
		}
		return io.NopCloser(cmd.InOrStdin()), -1, nil
	}
	f, err := os.Open(args[0])
	if err != nil {
		return nil, 0, err
	}
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return f, size, nil
}

// output is where a command writes: standard output, or a temporary file
// renamed over the destination by commit and removed by abort.
type output struct {
	w       io.Writer
	special *os.File // a device or pipe written in place
	tmp     *os.File
	dest    string
	done    bool
}

// createOutput opens the output of ff. A file output must not exist unless
// --force; binary data is not written to a terminal.
func createOutput(cmd *cobra.Command, ff fileFlags, plaintext bool) (*output, error) {
	if ff.output == "" || ff.output == "-" {
		w := cmd.OutOrStdout()
		if f, ok := w.(*os.File); ok && !plaintext && term.IsTerminal(int(f.Fd())) {
			return nil, usageErrorf("refusing to write an encrypted file to a terminal: use --out FILE or redirect standard output")
		}
		return &output{w: w}, nil
	}
	if fi, err := os.Stat(ff.output); err == nil && !fi.Mode().IsRegular() {
		// A device or a pipe (/dev/null, a FIFO) is written in place:
		// renaming a temporary file over it would replace the device.
		if fi.IsDir() {
			return nil, usageErrorf("--out %s is a directory; name a file", ff.output)
		}
		f, err := os.OpenFile(ff.output, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		return &output{w: f, special: f}, nil
	}
	if _, err := os.Lstat(ff.output); err == nil && !ff.force {
		return nil, fmt.Errorf("%s already exists: pass --force to overwrite it", ff.output)
	}
	dir, base := filepath.Split(ff.output)
	if dir == "" {
		dir = "."
	}
	// CreateTemp makes the file with mode 0600, in the destination's
	// directory so that the rename is atomic.
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &output{w: tmp, tmp: tmp, dest: ff.output}, nil
}

// commit makes the output final: the temporary file is flushed and
// renamed to its destination.
func (o *output) commit() error {
	if o.special != nil {
		return o.special.Close()
	}
	if o.tmp == nil {
		return nil
	}
	if err := o.tmp.Sync(); err != nil {
		return err
	}
	if err := o.tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(o.tmp.Name(), o.dest); err != nil {
		return err
	}
	o.done = true
	return nil
}

// abort removes the temporary file unless commit succeeded.
func (o *output) abort() {
	if o.special != nil {
		o.special.Close()
		return
	}
	if o.tmp == nil || o.done {
		return
	}
	_ = o.tmp.Close()
	_ = os.Remove(o.tmp.Name())
}

// ctxReader stops reading once ctx is done, so that Ctrl-C interrupts a
// long encryption (and the deferred cleanup removes the partial output).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// progressReader counts the bytes read on a progress bar.
type progressReader struct {
	io.Reader
	bar *progressbar.ProgressBar
	out io.Writer
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.Reader.Read(b)
	_ = p.bar.Add(n)
	return n, err
}

// withProgress shows a progress bar on standard error while r is read, if
// standard error is a terminal and r is a large file; otherwise it returns
// r as is.
func withProgress(cmd *cobra.Command, r io.Reader, size int64, what string) io.Reader {
	f, ok := cmd.ErrOrStderr().(*os.File)
	if !ok || size < progressMinBytes || !term.IsTerminal(int(f.Fd())) {
		return r
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return &progressReader{Reader: r, bar: bar, out: f}
}

// finishProgress completes and clears the bar of r, if it has one.
func finishProgress(r io.Reader) {
	if p, ok := r.(*progressReader); ok {
		_ = p.bar.Finish()
	}
}

// stopProgress ends the bar of r where it stands, if it was not finished:
// on failure the error then prints on a line of its own.
func stopProgress(r io.Reader) {
	if p, ok := r.(*progressReader); ok && !p.bar.IsFinished() {
		_ = p.bar.Exit()
		fmt.Fprintln(p.out)
	}
}
