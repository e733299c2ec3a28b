package csiprovider

import (
	"net"
	"time"

	"google.golang.org/grpc"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/cofferkms/coffer/internal/kmsplugin"
)

// DefaultSocket is where the Secrets Store CSI Driver looks for the coffer
// provider (its --provider-volume is /etc/kubernetes/secrets-store-csi-providers).
const DefaultSocket = "/etc/kubernetes/secrets-store-csi-providers/coffer.sock"

// Listen listens on the unix socket at path with mode 0600 (the driver runs
// as root), removing a stale socket but never another file or a socket in
// use.
func Listen(path string) (net.Listener, error) {
	return kmsplugin.Listen(path)
}

// NewGRPCServer registers p on a new gRPC server.
func NewGRPCServer(p *Provider) *grpc.Server {
	gs := grpc.NewServer(grpc.ConnectionTimeout(10 * time.Second))
	v1alpha1.RegisterCSIDriverProviderServer(gs, p)
	return gs
}
