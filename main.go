// Command dbproxy is the whole of dbproxy in one binary: the Terraform
// provider, the control plane, a data-plane node, a token generator and a
// one-machine development setup.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: dbproxy <command> [flags]

commands:
  controlplane  run the control plane (admin API, xDS server, store)
  dataplane     run a data-plane node: fed by the control plane
                (--control-plane ADDR --zone Z --node-id ID --credentials FILE)
                or from a static file (--config FILE)
  api           send one signed request to the admin API (METHOD PATH [BODY])
  token         print a connect token for logging in to a proxy as a
                database user (--hostname H --port P --username U)
  dev           a control plane, a node per zone on 127.0.x.1 and a MariaDB
                server on one machine, for trying dbproxy out

Run "dbproxy <command> -h" for a command's flags.

Started by Terraform (with TF_PLUGIN_MAGIC_COOKIE set), dbproxy serves the
Terraform provider (source address dbproxy/dbproxy); install it as
terraform-provider-dbproxy with "make install".
`

func run(args []string, stdout, stderr io.Writer) int {
	if os.Getenv("TF_PLUGIN_MAGIC_COOKIE") != "" {
		return serveProvider(stderr)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "dataplane":
		return runDataplane(args[1:], stderr)
	case "controlplane":
		return runControlplane(args[1:], stderr)
	case "api":
		return runAPI(args[1:], os.Stdin, stdout, stderr)
	case "dev":
		return runDev(args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "dbproxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
