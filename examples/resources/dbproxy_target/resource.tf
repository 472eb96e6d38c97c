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

# The writer; AUTO would discover the role from @@read_only.
resource "dbproxy_target" "primary" {
  proxy_name = dbproxy_proxy.main.id
  name       = "primary"
  host       = "10.0.1.10"
  port       = 3306
  zone       = "a"
  role       = "WRITER"
}

resource "dbproxy_target" "replica_b" {
  proxy_name = dbproxy_proxy.main.id
  name       = "replica-b"
  host       = "10.0.2.10"
  zone       = "b"
  role       = "AUTO"
}

output "primary_health" {
  value = dbproxy_target.primary.health
}
