# An IAM policy is imported by its name.
terraform import dbproxy_iam_policy.connect_app connect-app
