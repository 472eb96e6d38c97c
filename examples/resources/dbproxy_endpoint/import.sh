# An endpoint is imported as <proxy_name>/<endpoint name>.
terraform import dbproxy_endpoint.read_only main/read-only
