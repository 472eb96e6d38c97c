# A secret is imported by its name. The password is write-only and cannot be
# read back: the next apply sends password_wo only when password_wo_version
# changes.
terraform import dbproxy_secret.app app
