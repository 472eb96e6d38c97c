resource "dbproxy_iam_user" "app" {
  name = "app"
  path = "/applications/"
}
