package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// runToken prints a connect token, as aws rds generate-db-auth-token does:
// aws-sdk-go-v2's BuildAuthToken with a dbproxy access key.
func runToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("hostname", "", "the proxy endpoint's host, as the client connects to it")
	port := fs.Int("port", 0, "the proxy endpoint's port")
	user := fs.String("username", "", "the database user to connect as")
	region := fs.String("region", "", "the region the control plane signs for (default: the credentials file's, else "+sigv4.DefaultRegion+")")
	credsPath := fs.String("credentials", os.Getenv("DBPROXY_CREDENTIALS"),
		"credentials file (JSON: access_key_id, secret_access_key, region); default $DBPROXY_CREDENTIALS, else $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dbproxy token --hostname H --port P --username U [--credentials FILE] [--region R]\n\n"+
			"Prints a connect token, valid 15 minutes. Log in with it as the password, over TLS, with\n"+
			"the mysql_clear_password plugin (go-sql-driver: allowCleartextPasswords=true&tls=...).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *host == "" || *port < 1 || *port > 65535 || *user == "" {
		fmt.Fprintln(stderr, "dbproxy token: --hostname, --port (1-65535) and --username are required")
		fs.Usage()
		return 2
	}
	var c apiclient.KeyFile
	if *credsPath != "" {
		var err error
		if c, err = apiclient.LoadKeyFile(*credsPath); err != nil {
			fmt.Fprintf(stderr, "dbproxy token: read credentials: %v\n", err)
			return 1
		}
	} else {
		c.AccessKeyID, c.SecretAccessKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		if c.AccessKeyID != "" {
			// These may be real AWS keys; say which key signs.
			fmt.Fprintf(stderr, "dbproxy token: signing with access key %s from $AWS_ACCESS_KEY_ID\n", c.AccessKeyID)
		}
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		fmt.Fprintln(stderr, "dbproxy token: no access key: give --credentials (or $DBPROXY_CREDENTIALS), or set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY")
		return 2
	}
	r := *region
	if r == "" {
		r = c.Region
	}
	if r == "" {
		r = sigv4.DefaultRegion
	}
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := rdsauth.BuildAuthToken(ctx, net.JoinHostPort(*host, strconv.Itoa(*port)), r, *user, creds)
	if err != nil {
		fmt.Fprintf(stderr, "dbproxy token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
