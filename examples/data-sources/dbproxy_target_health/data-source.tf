data "dbproxy_target_health" "main" {
  proxy_name = "main"
}

output "target_health" {
  value = { for t in data.dbproxy_target_health.main.targets : t.name => t.health }
}
