//go:build generate

// Package tools pins the documentation generator in a module of its own,
// so that terraform-plugin-docs and what it pulls in (hc-install, sprig,
// goldmark, ...) stay out of the dbproxy module's dependencies. `make
// generate` runs the go:generate lines below from this directory.
package tools

import (
	_ "github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs"
)

// Examples are formatted as terraform fmt would, so that the docs show them
// that way and an unformatted example counts as a stale file.
//go:generate terraform fmt -recursive ../examples/

// tfplugindocs builds the provider from the module root, starts it through
// the terraform on PATH (never a downloaded one: `make generate` checks that
// terraform is there first) and renders templates/ and examples/ into
// docs/. It replaces only docs/index.md and the docs/<kind>/ directories;
// the hand-written pages beside them stay.
//go:generate go run github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs generate --provider-dir .. --provider-name dbproxy --rendered-provider-name dbproxy
//go:generate go run github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs validate --provider-dir .. --provider-name dbproxy
