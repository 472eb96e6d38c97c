terraform {
  # Write-only arguments (password_wo) need Terraform 1.11.
  required_version = ">= 1.11"

  required_providers {
    dbproxy = {
      source = "dbproxy/dbproxy"
    }
  }
}
