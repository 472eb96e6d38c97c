variable "app_db_password" {
  type      = string
  sensitive = true
  ephemeral = true
}

resource "dbproxy_secret" "app" {
  name                = "app"
  username            = "app"
  password_wo         = var.app_db_password
  password_wo_version = 1
}

resource "dbproxy_proxy" "main" {
  name          = "main"
  engine_family = "MYSQL"
  zones         = ["a", "b", "c"]
  require_tls   = true

  # Clients log in as the secret's user with a connect token
  # (dbproxy_auth_token) instead of the password.
  auth {
    secret                    = dbproxy_secret.app.name
    iam_auth                  = "REQUIRED"
    client_password_auth_type = "MYSQL_NATIVE_PASSWORD"
    description               = "application"
  }

  idle_client_timeout    = 1800
  max_client_connections = 5000
}

output "proxy_endpoint" {
  value = dbproxy_proxy.main.endpoint
}
