// Command dbproxy is the whole of dbproxy in one binary: the Terraform
// provider, the control plane, a data-plane node, a token generator and a
// one-machine development setup.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/node"
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

func runDataplane(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("dataplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "static configuration file (JSON; see docs/dataplane-config.md)")
	zone := fs.String("zone", "", "zone of this node (overrides node.zone in the file)")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log in JSON")
	var m managedFlags
	m.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "dataplane", Level: hclog.LevelFromString(*logLevel), Output: stderr, JSONFormat: *logJSON})
	switch {
	case *cfgPath != "" && m.controlPlane != "":
		fmt.Fprintln(stderr, "dbproxy dataplane: use either --config or --control-plane, not both")
		return 2
	case m.controlPlane != "":
		return m.run(*zone, log, stderr)
	case *cfgPath == "":
		fmt.Fprintln(stderr, "dbproxy dataplane: --control-plane (with --zone, --node-id, --credentials) or --config is required")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		log.Error("cannot load configuration", "path", *cfgPath, "error", err)
		return 1
	}
	if *zone != "" {
		cfg.Node.Zone = *zone
	}
	n, err := node.New(node.Options{Logger: log})
	if err != nil {
		log.Error("cannot start node", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Apply(ctx, cfg); err != nil {
		log.Error("cannot apply configuration", "error", err)
		return 1
	}
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down; draining clients for up to 30s")
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			n.Close(dctx)
			cancel()
			return 0
		case <-reload:
			next, err := config.Load(*cfgPath)
			if err == nil {
				if *zone != "" {
					next.Node.Zone = *zone
				}
				err = n.Apply(ctx, next)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("reload failed; keeping the running configuration", "error", err)
				continue
			}
			log.Info("configuration reloaded")
		}
	}
}
