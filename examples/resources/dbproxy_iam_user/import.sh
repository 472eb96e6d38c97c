# An IAM user is imported by its name.
terraform import dbproxy_iam_user.app app
