output "endpoint" {
  description = "host:port of the proxy on the first node; every node of its zones listens on the same port."
  value       = dbproxy_proxy.main.endpoint
}

output "addresses" {
  description = "The proxy on every node."
  value       = dbproxy_proxy.main.addresses
}

output "read_only_endpoint" {
  description = "host:port of the read-only endpoint."
  value       = dbproxy_endpoint.read_only.endpoint
}

output "target_health" {
  value = dbproxy_target.db1.health
}

output "app_access_key_id" {
  value = dbproxy_access_key.app.id
}

output "app_secret_access_key" {
  value     = dbproxy_access_key.app.secret
  sensitive = true
}

output "app_key_file" {
  description = "A key file for dbproxy token: terraform output -raw app_key_file > app-key.json"
  value = jsonencode({
    access_key_id     = dbproxy_access_key.app.id
    secret_access_key = dbproxy_access_key.app.secret
  })
  sensitive = true
}

output "connect_with_token" {
  description = "Log in through the proxy with a fresh connect token (write app-key.json first, see app_key_file)."
  value = join(" ", [
    "mariadb -h ${split(":", dbproxy_proxy.main.endpoint)[0]} -P ${dbproxy_proxy.main.port}",
    "-u ${var.database_user} --ssl --ssl-ca ${var.ca_file} --ssl-verify-server-cert",
    "-p\"$(dbproxy token --credentials app-key.json --hostname ${split(":", dbproxy_proxy.main.endpoint)[0]} --port ${dbproxy_proxy.main.port} --username ${var.database_user})\"",
  ])
}

output "connect_with_password" {
  description = "Log in with the database password (only while iam_auth is DISABLED)."
  value       = "mariadb -h ${split(":", dbproxy_proxy.main.endpoint)[0]} -P ${dbproxy_proxy.main.port} -u ${var.database_user} -p --ssl --ssl-ca ${var.ca_file} --ssl-verify-server-cert"
}
