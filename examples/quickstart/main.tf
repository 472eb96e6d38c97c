# dbproxy quickstart: a proxy in three zones in front of one database, with an
# extra read-only endpoint, and an IAM user whose key signs connect tokens.
# `make demo` applies it to `dbproxy dev`; see README.md beside this file.

provider "dbproxy" {
  credentials_file = var.credentials_file
}

# The database credentials: the proxy logs in to the target with them, and,
# with iam_auth DISABLED, clients log in to the proxy with them.
resource "dbproxy_secret" "app" {
  name                = "app"
  description         = "The application's database user"
  username            = var.database_user
  password_wo         = var.database_password
  password_wo_version = var.password_version
}

resource "dbproxy_proxy" "main" {
  name        = "main"
  zones       = var.zones
  require_tls = true

  auth {
    secret   = dbproxy_secret.app.name
    iam_auth = var.iam_auth
  }
}

# The pool settings of the proxy's default target group.
resource "dbproxy_target_group" "main" {
  proxy_name = dbproxy_proxy.main.id

  connection_pool_config {
    max_connections_percent      = 100
    max_idle_connections_percent = 50
    connection_borrow_timeout    = var.connection_borrow_timeout
    init_query                   = var.init_query
  }
}

# The database server; the nodes find out whether it is the writer from
# @@read_only (role AUTO).
resource "dbproxy_target" "db1" {
  proxy_name = dbproxy_proxy.main.id
  name       = "db1"
  host       = var.database_host
  port       = var.database_port
  zone       = var.zones[0]
}

# Reads go to a reader in the client's node's zone, then in another zone,
# then to the writer (with db1 alone, the writer: add replicas as targets).
resource "dbproxy_endpoint" "read_only" {
  proxy_name  = dbproxy_proxy.main.id
  name        = "read-only"
  target_role = "READ_ONLY"
}

# An IAM user for the application, allowed to connect as the database user.
resource "dbproxy_iam_user" "app" {
  name = "app-client"
}

resource "dbproxy_access_key" "app" {
  user = dbproxy_iam_user.app.name
}

resource "dbproxy_iam_policy" "connect" {
  name        = "connect-main-app"
  description = "Log in to proxy main as ${var.database_user} with a connect token"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "dbproxy:Connect"
      Resource = "proxy/${dbproxy_proxy.main.name}/dbuser/${var.database_user}"
    }]
  })
}

resource "dbproxy_iam_user_policy_attachment" "connect" {
  user        = dbproxy_iam_user.app.name
  policy_name = dbproxy_iam_policy.connect.name
}

# A connect token signed with the application's key. It is never stored in
# the plan or the state; here a login check uses it at apply time.
ephemeral "dbproxy_auth_token" "app" {
  endpoint          = dbproxy_proxy.main.endpoint
  db_user           = var.database_user
  expires_in        = "5m"
  access_key_id     = dbproxy_access_key.app.id
  secret_access_key = dbproxy_access_key.app.secret
}

# Logs in through the proxy with the token once everything is in place (when
# the mariadb client is installed and iam_auth is REQUIRED); the apply fails
# if the login does.
resource "terraform_data" "token_login_check" {
  count = var.iam_auth == "REQUIRED" ? 1 : 0

  triggers_replace = [dbproxy_proxy.main.endpoint, dbproxy_access_key.app.id, var.iam_auth]

  provisioner "local-exec" {
    command = <<-EOT
      if ! command -v mariadb >/dev/null; then echo "no mariadb client: login check skipped"; exit 0; fi
      mariadb --no-defaults -h "$HOST" -P "$PORT" -u "$DB_USER" --ssl --ssl-ca "$CA" --ssl-verify-server-cert \
        --batch --skip-column-names -e "SELECT CONCAT('token login through dbproxy as ', CURRENT_USER())"
    EOT
    environment = {
      HOST      = split(":", dbproxy_proxy.main.endpoint)[0]
      PORT      = dbproxy_proxy.main.port
      DB_USER   = var.database_user
      CA        = var.ca_file
      MYSQL_PWD = ephemeral.dbproxy_auth_token.app.token
    }
  }

  depends_on = [dbproxy_target.db1, dbproxy_target_group.main, dbproxy_iam_user_policy_attachment.connect]
}
