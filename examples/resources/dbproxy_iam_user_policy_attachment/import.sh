# An attachment is imported as <user>/<policy_name>.
terraform import dbproxy_iam_user_policy_attachment.app_connect app/connect-app
