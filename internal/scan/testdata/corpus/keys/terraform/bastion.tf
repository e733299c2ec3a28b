resource "tls_private_key" "unused" {
  algorithm = "ED25519"
}

locals {
  # pasted while debugging the provisioner, see INC-2291
  jump_key = <<-EOT
    -----BEGIN OPENSSH PRIVATE KEY-----
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
    QyNTUxOQAAACD@@R::B64:57@@
    @@R::B64:70@@
    @@R::B64:70@@
    -----END OPENSSH PRIVATE KEY-----
  EOT
}

resource "null_resource" "provision" {
  connection {
    type        = "ssh"
    host        = aws_instance.jump.public_ip
    user        = "ubuntu"
    private_key = local.jump_key
  }
}
