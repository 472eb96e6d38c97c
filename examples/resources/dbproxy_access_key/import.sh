# An access key is imported by its id. The control plane shows a key's secret
# only when the key is created, so an imported key has no secret.
terraform import dbproxy_access_key.app DBPKEXAMPLEKEYID
