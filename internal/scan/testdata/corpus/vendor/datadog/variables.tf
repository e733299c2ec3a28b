variable "datadog_api_key" {
  type        = string
  description = "Datadog API key for the agent and the provider"
  sensitive   = true
  default     = "@@R::hex:32@@"
}

variable "datadog_app_key" {
  type      = string
  sensitive = true
  default   = "@@R::hex:40@@"
}

variable "build_fingerprint" {
  type        = string
  description = "MD5 of the build inputs, set by CI"
  default     = "@@R::hex:32@@"
}
