resource "dbproxy_iam_user" "app" {
  name = "app"
}

resource "dbproxy_access_key" "app" {
  user = dbproxy_iam_user.app.name
}

output "app_access_key_id" {
  value = dbproxy_access_key.app.id
}

# Known only when the key is created; kept in the state from then on.
output "app_secret_access_key" {
  value     = dbproxy_access_key.app.secret
  sensitive = true
}
