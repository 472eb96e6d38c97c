# A target is imported as <proxy_name>/<target name>.
terraform import dbproxy_target.primary main/primary
