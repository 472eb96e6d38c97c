variable "credentials_file" {
  description = "Key file of the control plane (dbproxy dev prints it; root-credentials.json in the control plane's data directory). Null: $DBPROXY_CREDENTIALS."
  type        = string
  default     = null
}

variable "database_host" {
  description = "Host of the MySQL or MariaDB server, as the nodes reach it."
  type        = string
  default     = "127.0.0.1"
}

variable "database_port" {
  description = "Port of the database server (dbproxy dev prints it)."
  type        = number
  default     = 3306
}

variable "database_user" {
  description = "Database user the proxy logs in as, and that clients log in as."
  type        = string
  default     = "app"
}

variable "database_password" {
  description = "Password of database_user. Ephemeral: it is in neither the plan nor the state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "password_version" {
  description = "Increase it to send a new database_password to the control plane and the nodes."
  type        = number
  default     = 1
}

variable "zones" {
  description = "Zones the proxy serves in (dbproxy dev runs one node in each of a, b and c)."
  type        = list(string)
  default     = ["a", "b", "c"]
}

variable "iam_auth" {
  description = "REQUIRED: clients log in with connect tokens only. DISABLED: with the database password."
  type        = string
  default     = "REQUIRED"
}

variable "connection_borrow_timeout" {
  description = "Seconds a client waits for a database connection before it gets an error."
  type        = number
  default     = 120
}

variable "init_query" {
  description = "Statement run on every new database connection (null: none)."
  type        = string
  default     = null
}

variable "ca_file" {
  description = "Path of the control plane's CA certificate, used only in the connection commands of the outputs."
  type        = string
  default     = "ca.pem"
}
