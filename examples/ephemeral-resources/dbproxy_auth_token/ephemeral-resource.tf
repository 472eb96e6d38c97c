resource "dbproxy_iam_user" "app" {
  name = "app"
}

resource "dbproxy_access_key" "app" {
  user = dbproxy_iam_user.app.name
}

# A 15-minute token to log in to the proxy main as the database user app,
# signed with the user's key (left out: the provider's key). The user needs a
# policy allowing dbproxy:Connect on proxy/main/dbuser/app.
ephemeral "dbproxy_auth_token" "app" {
  endpoint          = "127.0.1.1:6033"
  db_user           = "app"
  expires_in        = "5m"
  access_key_id     = dbproxy_access_key.app.id
  secret_access_key = dbproxy_access_key.app.secret
}

# Ephemeral values go only where Terraform keeps them out of the plan and the
# state: write-only arguments, provider blocks, provisioners. Here a login
# check at apply time (needs the mariadb client and the control plane's CA).
resource "terraform_data" "login_check" {
  provisioner "local-exec" {
    command = "mariadb -h 127.0.1.1 -P 6033 -u app --ssl --ssl-verify-server-cert --ssl-ca ca.pem -e 'SELECT CURRENT_USER()'"
    environment = {
      MYSQL_PWD = ephemeral.dbproxy_auth_token.app.token
    }
  }
}
