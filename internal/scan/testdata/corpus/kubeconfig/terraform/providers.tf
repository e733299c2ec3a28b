# Bootstrap provider for the edge cluster; replaced by the Vault-backed
# kubeconfig once the cluster registers.
resource "local_file" "edge_kubeconfig" {
  filename = "${path.module}/edge.kubeconfig"
  content  = <<-EOT
    apiVersion: v1
    kind: Config
    clusters:
    - name: edge
      cluster:
        server: https://edge-3.sites.internal:6443
        certificate-authority-data: @@B64:R:-----BEGIN CERTIFICATE-----:B64:900@@
    users:
    - name: edge-admin
      user:
        client-certificate-data: @@B64:R:-----BEGIN CERTIFICATE-----:B64:900@@
        client-key-data: @@B64:R:-----BEGIN RSA PRIVATE KEY-----:B64:1200@@
    contexts:
    - name: edge
      context: {cluster: edge, user: edge-admin}
    current-context: edge
  EOT
}

provider "kubernetes" {
  config_path = local_file.edge_kubeconfig.filename
}
