terraform {
  required_providers {
    dbproxy = {
      source = "dbproxy/dbproxy"
    }
  }
}

# The key file the control plane writes at its first start names the API
# endpoint, the CA file and the root key.
provider "dbproxy" {
  credentials_file = "/var/lib/dbproxy/root-credentials.json"
}

# Or every argument on its own (each also has a DBPROXY_* variable).
provider "dbproxy" {
  alias             = "explicit"
  endpoint          = "https://127.0.0.1:8443"
  access_key_id     = var.access_key_id
  secret_access_key = var.secret_access_key
  ca_cert           = file("/var/lib/dbproxy/ca.pem")
}

variable "access_key_id" {
  type = string
}

variable "secret_access_key" {
  type      = string
  sensitive = true
}
