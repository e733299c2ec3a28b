environment     = "prod"
datadog_site    = "datadoghq.com"
datadog_api_key = "@@R::hex:32@@"
datadog_app_key = "@@R::hex:40@@"
