package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/atomicfile"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// runAPI sends one signed request to the admin API and prints the JSON
// answer: dbproxy api [flags] METHOD PATH [BODY|-].
func runAPI(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(stderr)
	credsPath := fs.String("credentials", os.Getenv("DBPROXY_CREDENTIALS"), "credentials file (JSON: access_key_id, secret_access_key, endpoint, ca_file, region); default $DBPROXY_CREDENTIALS")
	endpoint := fs.String("endpoint", "", "API base URL (overrides the credentials file)")
	caFile := fs.String("ca-file", "", "CA certificate to trust (overrides the credentials file)")
	timeout := fs.Duration("timeout", 2*time.Minute, "request timeout")
	outPath := fs.String("out", "", "write the answer's body as is to this file (mode 0600) instead of printing JSON, e.g. for GET /v1/backup")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dbproxy api [flags] METHOD PATH [BODY|-]\n\nexamples:\n"+
			"  dbproxy api --credentials data/root-credentials.json GET /v1/proxies\n"+
			"  dbproxy api --credentials data/root-credentials.json --out state-backup.db GET /v1/backup")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 2 || len(rest) > 3 || !strings.HasPrefix(rest[1], "/") {
		fs.Usage()
		return 2
	}
	if *credsPath == "" {
		fmt.Fprintln(stderr, "dbproxy api: --credentials (or $DBPROXY_CREDENTIALS) is required")
		return 2
	}
	// A credentials file as the control plane writes it
	// (root-credentials.json) or as an operator writes one for another key.
	c, err := apiclient.LoadKeyFile(*credsPath)
	if err != nil {
		fmt.Fprintf(stderr, "dbproxy api: read credentials: %v\n", err)
		return 1
	}
	if *endpoint != "" {
		c.Endpoint = *endpoint
	}
	if *caFile != "" {
		c.CAFile = *caFile
	}
	var ca []byte
	if c.CAFile != "" {
		if ca, err = os.ReadFile(c.CAFile); err != nil {
			fmt.Fprintf(stderr, "dbproxy api: read CA: %v\n", err)
			return 1
		}
	}
	cl, err := apiclient.New(apiclient.Options{Endpoint: c.Endpoint, Region: c.Region, CAPEM: ca, Timeout: *timeout,
		Credentials: sigv4.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}})
	if err != nil {
		fmt.Fprintf(stderr, "dbproxy api: %v\n", err)
		return 1
	}
	var body any
	if len(rest) == 3 {
		raw := []byte(rest[2])
		if rest[2] == "-" {
			if raw, err = io.ReadAll(stdin); err != nil {
				fmt.Fprintf(stderr, "dbproxy api: read body: %v\n", err)
				return 1
			}
		}
		body = apiclient.RawBody(raw)
	}
	if *outPath != "" {
		var raw apiclient.RawResponse
		if err := cl.Do(context.Background(), strings.ToUpper(rest[0]), rest[1], body, &raw); err != nil {
			fmt.Fprintf(stderr, "dbproxy api: %v\n", err)
			return 1
		}
		if err := atomicfile.Write(*outPath, raw.Body, 0o600); err != nil {
			fmt.Fprintf(stderr, "dbproxy api: %v\n", err)
			return 1
		}
		rev := ""
		if v := raw.Header.Get(model.RevisionHeader); v != "" {
			rev = " (revision " + v + ")"
		}
		fmt.Fprintf(stderr, "dbproxy api: wrote %d bytes to %s%s\n", len(raw.Body), *outPath, rev)
		return 0
	}
	var out json.RawMessage
	if err := cl.Do(context.Background(), strings.ToUpper(rest[0]), rest[1], body, &out); err != nil {
		fmt.Fprintf(stderr, "dbproxy api: %v\n", err)
		return 1
	}
	pretty, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		pretty = out
	}
	fmt.Fprintln(stdout, string(pretty))
	return 0
}
