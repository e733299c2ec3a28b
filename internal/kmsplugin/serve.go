package kmsplugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	kmsapi "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

// SocketPath turns "unix:///path" (or a bare path) into a path.
func SocketPath(listen string) (string, error) {
	p := listen
	if strings.Contains(listen, "://") {
		rest, ok := strings.CutPrefix(listen, "unix://")
		if !ok {
			return "", fmt.Errorf("--listen %q: the KMS plugin listens on a unix socket, like unix:///var/run/coffer/kms.sock", listen)
		}
		p = rest
	}
	if p == "" {
		return "", errors.New("--listen: empty socket path")
	}
	return p, nil
}

// Listen removes a stale socket file at path and listens there with mode
// 0600, so only the apiserver's user can talk to the plugin.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to remove it", path)
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another running plugin", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	// Create the socket 0600 from the start: the umask covers the moment
	// between bind and chmod. (Listen runs at start-up, before other
	// goroutines create files.)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// NewGRPCServer registers svc behind k8s.io/kms's gRPC adapter.
func NewGRPCServer(path string, timeout time.Duration, svc kmsservice.Service) *grpc.Server {
	gs := grpc.NewServer(grpc.ConnectionTimeout(timeout))
	kmsapi.RegisterKeyManagementServiceServer(gs, kmsservice.NewGRPCService(path, timeout, svc))
	return gs
}
