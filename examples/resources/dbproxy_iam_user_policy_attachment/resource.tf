resource "dbproxy_iam_user" "app" {
  name = "app"
}

resource "dbproxy_iam_policy" "connect_app" {
  name = "connect-app"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "dbproxy:Connect"
      Resource = "proxy/main/dbuser/app"
    }]
  })
}

resource "dbproxy_iam_user_policy_attachment" "app_connect" {
  user        = dbproxy_iam_user.app.name
  policy_name = dbproxy_iam_policy.connect_app.name
}
