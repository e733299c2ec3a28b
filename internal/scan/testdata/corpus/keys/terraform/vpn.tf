resource "kubernetes_secret" "vpn" {
  metadata {
    name = "wireguard-ca"
  }
  data = {
    "ca.key" = <<-EOT
      -----BEGIN EC PRIVATE KEY-----
      MHcCAQEEI@@R::B64:55@@
      @@R::B64:64@@
      -----END EC PRIVATE KEY-----
    EOT
  }
}
