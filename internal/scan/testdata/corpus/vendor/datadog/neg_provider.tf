provider "datadog" {
  api_key = var.datadog_api_key
  app_key = var.datadog_app_key
}

variable "datadog_api_key" {
  type      = string
  sensitive = true
}

variable "datadog_app_key" {
  type      = string
  sensitive = true
  default   = "<DATADOG_APP_KEY>"
}

module "dd_placeholder" {
  source  = "./modules/dd"
  api_key = "00000000000000000000000000000000"
}

variable "artifact_digest" {
  default = "@@R::hex:40@@"
}
