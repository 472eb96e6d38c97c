# A proxy's target group is imported by the proxy's name.
terraform import dbproxy_target_group.main main
