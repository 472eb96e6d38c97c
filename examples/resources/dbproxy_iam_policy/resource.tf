# Lets the keys of the users it is attached to sign connect tokens for the
# database user app of the proxy main.
resource "dbproxy_iam_policy" "connect_app" {
  name        = "connect-app"
  description = "Connect to proxy main as app"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = "dbproxy:Connect"
        Resource = "proxy/main/dbuser/app"
      },
    ]
  })
}
