data "dbproxy_nodes" "zone_a" {
  zone = "a"
}

output "connected_nodes" {
  value = [for n in data.dbproxy_nodes.zone_a.nodes : n.id if n.connected]
}

# Nodes that rejected a configuration, with what they said.
output "rejections" {
  value = { for n in data.dbproxy_nodes.zone_a.nodes : n.id => n.last_nack.message if n.last_nack != null }
}
