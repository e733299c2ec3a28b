package kube

import "testing"

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// KMS starts the Coffer server and plugin (key alias/k8s) and encrypts
	// Resources with them. Without it the apiserver stores everything in
	// plaintext and Coffer and Plugin are nil.
	KMS bool
	// Resources to encrypt; default secrets and configmaps.
	Resources []string
	// APIServer options; EncryptionConfig is filled in when KMS is set and
	// it is empty.
	APIServer APIServerOptions
}

// Cluster is etcd and a kube-apiserver, optionally with Coffer and the KMS
// plugin.
type Cluster struct {
	Etcd      *Etcd
	Coffer    *Coffer
	Plugin    *Plugin
	APIServer *APIServer
	// KeyID is the Coffer key's id (with KMS).
	KeyID string
}

// StartCluster starts the pieces in order: etcd, Coffer (with a key
// alias/k8s), the plugin (waiting for its first key_id), kube-apiserver.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{Etcd: StartEtcd(t)}
	if opts.KMS {
		c.Coffer = StartCoffer(t)
		c.KeyID = c.Coffer.CreateKey("alias/k8s")
		c.Plugin = StartPlugin(t, c.Coffer, PluginOptions{})
		c.Plugin.WaitKeyID(Patience(), nil)
		if opts.APIServer.EncryptionConfig == "" {
			opts.APIServer.EncryptionConfig = EncryptionConfig(c.Plugin.Socket, opts.Resources...)
		}
	}
	c.APIServer = StartAPIServer(t, c.Etcd, opts.APIServer)
	return c
}
