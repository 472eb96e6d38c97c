# A proxy is imported by its name.
terraform import dbproxy_proxy.main main
