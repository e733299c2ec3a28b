package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/seal"
)

const (
	// DefaultDevice is the kernel's TPM resource manager: it isolates
	// Coffer's transient objects and sessions from other TPM users and
	// flushes them if Coffer dies mid-operation.
	DefaultDevice = "/dev/tpmrm0"

	tcpPrefix = "tcp://"

	// maxResponse bounds a TPM response; real TPMs answer at most a few
	// KiB (TPM_PT_MAX_RESPONSE_SIZE is typically 4096).
	maxResponse = 64 << 10
	// dialTimeout bounds connecting to a socket TPM.
	dialTimeout = 10 * time.Second
	// commandTimeout bounds one command when the context has no deadline:
	// creating a primary key on a slow TPM takes seconds, never minutes.
	commandTimeout = 2 * time.Minute
	// maxRetries bounds resending a command the TPM answered with
	// TPM_RC_RETRY, TPM_RC_YIELDED or TPM_RC_TESTING (not executed).
	maxRetries = 8
	// flushTimeout bounds the flushes that clean up after an operation.
	flushTimeout = 10 * time.Second

	tagNoSessions = 0x8001
	tagSessions   = 0x8002
	rcRetry       = 0x922
	rcYielded     = 0x908
	rcTesting     = 0x90A
)

// transportError is a failure to talk to the TPM at all (not a TPM
// response code). Retrying later may help unless it wraps
// seal.ErrMisconfigured.
type transportError struct {
	msg string
	err error
}

func (e *transportError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *transportError) Unwrap() error { return e.err }

// notATPM is the error for something that answers but not as a TPM does;
// retrying will not help until the configuration changes.
func notATPM(dev, why string) error {
	return &transportError{
		msg: fmt.Sprintf("TPM seal: %s is not a TPM (%s); set seal.tpm2.device to the TPM resource manager (%s), a swtpm unix socket or tcp://HOST:PORT of a swtpm server", dev, why, DefaultDevice),
		err: seal.ErrMisconfigured,
	}
}

// conn is one connection to the TPM for the length of one operation. It
// implements go-tpm's transport.TPM: Send writes one command and reads
// one whole response.
type conn struct {
	ctx  context.Context
	dev  string
	rwc  io.ReadWriteCloser
	sock net.Conn // set for a socket, which has deadlines and a stream framing
	// tap, when set (tests), sees every command and response: what a
	// probe on the bus between the CPU and the TPM sees.
	tap func([]byte)
	// broken is set after an I/O error: the stream may be out of step
	// with the TPM, so nothing more is sent on it.
	broken bool
}

// dial opens the TPM named by dev: tcp://HOST:PORT, a unix socket (swtpm
// --server type=unixio) or a character device (/dev/tpmrm0).
func dial(ctx context.Context, dev string) (*conn, error) {
	if addr, ok := strings.CutPrefix(dev, tcpPrefix); ok {
		d := net.Dialer{Timeout: dialTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &transportError{msg: fmt.Sprintf("TPM seal: cannot connect to the TPM at %s (is swtpm running?)", dev), err: err}
		}
		return &conn{ctx: ctx, dev: dev, rwc: c, sock: c}, nil
	}
	fi, err := os.Stat(dev)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &transportError{msg: fmt.Sprintf("TPM seal: TPM device %s does not exist (no TPM, its driver not loaded, or swtpm not started)", dev)}
	}
	if err != nil {
		return nil, &transportError{msg: fmt.Sprintf("TPM seal: cannot inspect the TPM device %s", dev), err: err}
	}
	switch {
	case fi.Mode()&fs.ModeSocket != 0:
		d := net.Dialer{Timeout: dialTimeout}
		c, err := d.DialContext(ctx, "unix", dev)
		if err != nil {
			return nil, &transportError{msg: fmt.Sprintf("TPM seal: cannot connect to the TPM socket %s (is swtpm running?)", dev), err: err}
		}
		return &conn{ctx: ctx, dev: dev, rwc: c, sock: c}, nil
	case fi.Mode()&fs.ModeCharDevice != 0:
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrPermission) {
			return nil, &transportError{
				msg: fmt.Sprintf("TPM seal: no permission to open %s; run Coffer as a member of the group that owns it (tss on most distributions)", dev),
				err: seal.ErrMisconfigured,
			}
		}
		if err != nil {
			return nil, &transportError{msg: fmt.Sprintf("TPM seal: cannot open the TPM device %s", dev), err: err}
		}
		return &conn{ctx: ctx, dev: dev, rwc: f}, nil
	default:
		return nil, notATPM(dev, "not a character device or a unix socket")
	}
}

// Close closes the connection.
func (c *conn) Close() error { return c.rwc.Close() }

// Send implements transport.TPM. It retries a command the TPM did not
// execute for now (TPM_RC_RETRY, _YIELDED, _TESTING); the TPM's state and
// the sessions' nonces are unchanged then, so the same bytes are valid.
func (c *conn) Send(cmd []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		if err := c.ctx.Err(); err != nil {
			return nil, &transportError{msg: "TPM seal: operation abandoned", err: err}
		}
		if c.tap != nil {
			c.tap(cmd)
		}
		if c.broken {
			return nil, &transportError{msg: "TPM seal: connection to the TPM at " + c.dev + " failed earlier in this operation"}
		}
		rsp, err := c.roundTrip(cmd)
		if err != nil {
			c.broken = true
			return nil, err
		}
		if c.tap != nil {
			c.tap(rsp)
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			if attempt < maxRetries {
				t := time.NewTimer(time.Duration(1<<attempt) * 5 * time.Millisecond)
				select {
				case <-t.C:
				case <-c.ctx.Done():
					t.Stop()
				}
				continue
			}
		}
		return rsp, nil
	}
}

// roundTrip writes one command and reads one response. A character
// device returns a whole response per read; a socket is a byte stream, so
// the response is read as its 10-byte header (tag, size, code) and then
// the rest.
func (c *conn) roundTrip(cmd []byte) ([]byte, error) {
	ioErr := func(what string, err error) error {
		return &transportError{msg: fmt.Sprintf("TPM seal: %s the TPM at %s", what, c.dev), err: err}
	}
	if c.sock != nil {
		deadline, ok := c.ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(commandTimeout)
		}
		if err := c.sock.SetDeadline(deadline); err != nil {
			return nil, ioErr("cannot set a deadline for", err)
		}
	}
	if _, err := c.rwc.Write(cmd); err != nil {
		return nil, ioErr("cannot write to", err)
	}
	if c.sock == nil {
		buf := make([]byte, maxResponse)
		n, err := c.rwc.Read(buf)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			if errors.Is(err, io.EOF) {
				return nil, notATPM(c.dev, "it returned no response")
			}
			return nil, ioErr("cannot read from", err)
		}
		rsp := buf[:n]
		if err := checkHeader(c.dev, rsp); err != nil {
			return nil, err
		}
		if int(binary.BigEndian.Uint32(rsp[2:6])) != n {
			return nil, notATPM(c.dev, "its response length does not match its header")
		}
		return rsp, nil
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c.rwc, hdr); err != nil {
		return nil, ioErr("cannot read a response from", err)
	}
	if err := checkHeader(c.dev, hdr); err != nil {
		return nil, err
	}
	rsp := make([]byte, binary.BigEndian.Uint32(hdr[2:6]))
	copy(rsp, hdr)
	if _, err := io.ReadFull(c.rwc, rsp[10:]); err != nil {
		return nil, ioErr("cannot read a response from", err)
	}
	return rsp, nil
}

// checkHeader checks that a response starts like a TPM 2.0 response: a
// known tag and a size between the header's and maxResponse.
func checkHeader(dev string, rsp []byte) error {
	if len(rsp) < 10 {
		return notATPM(dev, "its response is shorter than a TPM response header")
	}
	tag := binary.BigEndian.Uint16(rsp[0:2])
	size := binary.BigEndian.Uint32(rsp[2:6])
	if tag != tagNoSessions && tag != tagSessions {
		return notATPM(dev, fmt.Sprintf("its response has tag %#04x, not a TPM 2.0 tag", tag))
	}
	if size < 10 || size > maxResponse {
		return notATPM(dev, fmt.Sprintf("its response claims %d bytes", size))
	}
	return nil
}
