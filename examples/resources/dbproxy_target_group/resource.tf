resource "dbproxy_secret" "app" {
  name                = "app"
  username            = "app"
  password_wo         = "change-me"
  password_wo_version = 1
}

resource "dbproxy_proxy" "main" {
  name  = "main"
  zones = ["a", "b", "c"]

  auth {
    secret = dbproxy_secret.app.name
  }
}

# The pool settings of the proxy's default target group. Destroying this
# resource puts them back to their defaults.
resource "dbproxy_target_group" "main" {
  proxy_name = dbproxy_proxy.main.id

  connection_pool_config {
    max_connections_percent      = 90
    max_idle_connections_percent = 50
    connection_borrow_timeout    = 30
    init_query                   = "SET SESSION wait_timeout = 600"
    session_pinning_filters      = ["EXCLUDE_VARIABLE_SETS"]
  }
}
