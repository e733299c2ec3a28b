terraform {
  required_providers {
    datadog = {
      source  = "DataDog/datadog"
      version = "~> 3.40"
    }
  }
}

provider "datadog" {
  api_key = "@@R::hex:32@@"
  app_key = "@@R::hex:40@@"
  api_url = "https://api.datadoghq.eu/"
}

resource "datadog_monitor" "checkout_latency" {
  name    = "Checkout p95 latency"
  type    = "metric alert"
  query   = "avg(last_5m):p95:trace.http.request{service:checkout} > 0.8"
  message = "@pagerduty-checkout"
}
