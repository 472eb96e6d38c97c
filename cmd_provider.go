package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/dbproxy/dbproxy/provider"
)

// serveProvider serves the Terraform provider over the plugin protocol;
// Terraform starts the binary for it.
func serveProvider(stderr io.Writer) int {
	err := providerserver.Serve(context.Background(), provider.New(buildVersion(), provider.Options{}), providerserver.ServeOpts{
		Address: provider.Address,
	})
	if err != nil {
		fmt.Fprintf(stderr, "dbproxy: serve the Terraform provider: %v\n", err)
		return 1
	}
	return 0
}

// buildVersion is the module version the binary was built from ("dev" for
// a build from a work tree).
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
