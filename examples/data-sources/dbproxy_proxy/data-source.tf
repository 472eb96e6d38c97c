data "dbproxy_proxy" "main" {
  name = "main"
}

output "main_addresses" {
  value = data.dbproxy_proxy.main.addresses
}
