variable "app_db_password" {
  type      = string
  sensitive = true
  # Ephemeral: the password is in neither the plan nor the state.
  ephemeral = true
}

resource "dbproxy_secret" "app" {
  name        = "app"
  description = "Credentials of the application's database user"
  username    = "app"
  password_wo = var.app_db_password
  # Increase to send a new password to the control plane and every node.
  password_wo_version = 1
}
