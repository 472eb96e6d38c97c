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

# Reads, spread over the replicas and preferring the client's node's zone.
resource "dbproxy_endpoint" "read_only" {
  proxy_name  = dbproxy_proxy.main.id
  name        = "read-only"
  target_role = "READ_ONLY"
  # Left out, the endpoint follows the proxy's zones.
  zones = ["a", "b"]
}

output "reader_endpoint" {
  value = dbproxy_endpoint.read_only.endpoint
}
