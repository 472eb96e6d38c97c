package provider

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
)

// Helpers of the resources that live under a proxy (dbproxy_target,
// dbproxy_endpoint): their ids, their proxy's zones, and the wait for a
// target's health.

// healthAvailable is the health the nodes report for a target they all
// reach (the control plane's aggregate, see GET /v1/proxies/{p}/targets).
const healthAvailable = "AVAILABLE"

// healthPoll is how often a create or update asks the API for a target's
// health while it waits: nodes report a change within about a second.
const healthPoll = 250 * time.Millisecond

// childImportFormat is the import id of a proxy's target or endpoint.
const childImportFormat = "proxy_name/name"

// childID is the Terraform id of an object under a proxy.
func childID(proxy, name string) string { return proxy + "/" + name }

// proxyOf reads the proxy a child belongs to; found is false when it does
// not exist (any more).
func proxyOf(ctx context.Context, c *apiclient.Client, proxy string) (p model.Proxy, found bool, err error) {
	if err := c.Do(ctx, "GET", objectPath("proxies", proxy), nil, &p); err != nil {
		if model.IsNotFound(err) {
			return p, false, nil
		}
		return p, false, fmt.Errorf("read proxy %q: %w", proxy, err)
	}
	return p, true, nil
}

// waitChildRollout waits until the nodes of zones serve rev. It reads the
// proxy's zones when zones is nil; a proxy that is gone has no nodes to
// wait for. On timeout the error names the zones without nodes and the
// nodes that did not ack, with their NACKs.
func waitChildRollout(ctx context.Context, c *apiclient.Client, rev uint64, proxy string, zones []string, what string) diag.Diagnostics {
	var diags diag.Diagnostics
	if zones == nil {
		p, found, err := proxyOf(ctx, c, proxy)
		if err != nil {
			diags.AddError("Cannot Wait for the Data Plane", err.Error())
			return diags
		}
		if !found {
			return nil
		}
		zones = p.Zones
	}
	return waitRollout(ctx, c, rev, zones, what)
}

// waitDeleted waits until the connected nodes of zones no longer serve
// what a delete removed. Unlike a create, a zone with no connected node is
// not waited for: a node that connects later gets the configuration
// without it, and waiting would hold every destroy of a zone that is down
// until its timeout.
func waitDeleted(ctx context.Context, c *apiclient.Client, rev uint64, proxy string, zones []string, what string) diag.Diagnostics {
	var diags diag.Diagnostics
	if zones == nil {
		p, found, err := proxyOf(ctx, c, proxy)
		if err != nil {
			diags.AddError("Cannot Wait for the Data Plane", err.Error())
			return diags
		}
		if !found {
			return nil
		}
		zones = p.Zones
	}
	var nodes model.List[model.Node]
	if err := c.Do(ctx, "GET", "/v1/nodes", nil, &nodes); err != nil {
		addAPIError(&diags, "Cannot Wait for the Data Plane", err, nil)
		return diags
	}
	var live []string
	for _, n := range nodes.Items {
		if n.Connected && slices.Contains(zones, n.Zone) && !slices.Contains(live, n.Zone) {
			live = append(live, n.Zone)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return waitChildRollout(ctx, c, rev, proxy, live, what)
}

// waitTargetHealth polls a target until the nodes report it AVAILABLE,
// bounded by ctx (the create or update timeout). It returns the target as
// last read, and an error diagnostic saying what the nodes report when the
// timeout ends first. A target that cannot be reached yet (a database
// still starting) therefore does not fail the apply at once.
func waitTargetHealth(ctx context.Context, c *apiclient.Client, proxy, name, what string) (*model.Target, diag.Diagnostics) {
	var diags diag.Diagnostics
	p := objectPath("proxies", proxy, "targets", name)
	tick := time.NewTicker(healthPoll)
	defer tick.Stop()
	var last *model.Target
	start := time.Now()
	for {
		var t model.Target
		err := c.Do(ctx, "GET", p, nil, &t)
		switch {
		case err == nil:
			last = &t
			if t.Health == healthAvailable {
				tflog.Debug(ctx, "the nodes report the target available", map[string]any{
					"proxy": proxy, "target": name, "discovered_role": t.DiscoveredRole, "waited": time.Since(start).String()})
				return last, diags
			}
			tflog.Trace(ctx, "waiting for the target to be available", map[string]any{"proxy": proxy, "target": name, "health": t.Health})
		case ctx.Err() != nil:
			// The deadline ended the request: report the last answer.
		case model.IsNotFound(err):
			diags.AddError("Target Disappeared",
				fmt.Sprintf("%s was deleted while the provider waited for the nodes to report it healthy (by someone else, or with its proxy).", what))
			return nil, diags
		default:
			addAPIError(&diags, "Cannot Read Target Health", err, nil)
			return last, diags
		}
		select {
		case <-ctx.Done():
			diags.AddError("Timed Out Waiting for the Target to Be Available", healthTimeoutDetail(what, last, time.Since(start)))
			return last, diags
		case <-tick.C:
		}
	}
}

// healthTimeoutDetail says what the nodes report about a target that did
// not become available in time, and what to do about it.
func healthTimeoutDetail(what string, t *model.Target, waited time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s was stored and every node of its proxy's zones serves it, but after %s the nodes do not report it %s.",
		what, waited.Round(100*time.Millisecond), healthAvailable)
	if t != nil {
		role := t.DiscoveredRole
		if role == "" {
			role = "none yet"
		}
		fmt.Fprintf(&b, "\nThe nodes report health %s (discovered role: %s) for %s:%d.", t.Health, role, t.Host, t.Port)
		if t.HealthReason != "" {
			fmt.Fprintf(&b, "\nWhy: %s.", t.HealthReason)
		}
		switch t.Health {
		case "UNAVAILABLE":
			b.WriteString(" No node can connect to it and log in.")
		case "DEGRADED":
			b.WriteString(" Some nodes reach it and some do not.")
		case "UNKNOWN":
			b.WriteString(" No node has reported it yet.")
		}
	}
	b.WriteString("\nCheck that the host and port are reachable from the nodes and that the proxy's secrets can log in, " +
		"or raise the resource's timeouts to wait longer. The target stays on the control plane: after a create it is " +
		"tainted and the next apply replaces it, after an update the next apply waits again. The data source " +
		"dbproxy_target_health shows what the nodes report.")
	return b.String()
}

// pathProxyName is the attribute that names a child's proxy.
var pathProxyName = path.Root("proxy_name")
