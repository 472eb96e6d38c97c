package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
)

// defaultTimeout bounds a create, update or delete, rollout wait included,
// when the configuration sets no timeouts block.
const defaultTimeout = 5 * time.Minute

// rolloutPoll is the longest single rollout wait the provider asks the API
// for; it asks again until its own deadline.
const rolloutPoll = time.Minute

// rolloutMargin is kept back from the deadline for a last look at the
// rollout: a wait the server ends exactly at the request's own deadline
// races with the request's end and leaves nothing to report.
const rolloutMargin = time.Second

// providerDataFrom is the Configure step of every resource and data
// source: nil (and no error) while the provider is not configured yet.
func providerDataFrom(pd any, diags *diag.Diagnostics) *providerData {
	if pd == nil {
		return nil
	}
	d, ok := pd.(*providerData)
	if !ok {
		diags.AddError("Unexpected Provider Data", fmt.Sprintf("Expected *providerData, got %T. This is a bug in the provider.", pd))
		return nil
	}
	return d
}

// ready reports whether the provider has a client, adding an error when it
// has none: its configuration held values unknown until apply.
func (d *providerData) ready(diags *diag.Diagnostics) bool {
	if d == nil || d.client == nil {
		diags.AddError("Provider Not Configured",
			"The dbproxy provider has no API client: its configuration depends on values that are not known yet. "+
				"Apply the resources it depends on first, or set the provider's arguments to known values.")
		return false
	}
	return true
}

// addAPIError turns an API failure into a diagnostic, on the attribute the
// API's error names when there is one (each field of a multi-field
// validation error gets its own).
func addAPIError(diags *diag.Diagnostics, summary string, err error, rename map[string]string) {
	var ae *model.Error
	if !errors.As(err, &ae) {
		diags.AddError(summary, err.Error())
		return
	}
	detail := func(msg string) string { return fmt.Sprintf("%s (%s, HTTP %d)", msg, ae.Code, ae.Status) }
	if len(ae.Fields) > 0 {
		for _, fe := range ae.Fields {
			if p, ok := fieldPath(fe.Field, rename); ok {
				diags.AddAttributeError(p, summary, detail(fe.Message))
			} else {
				diags.AddError(summary, detail(fe.Field+": "+fe.Message))
			}
		}
		return
	}
	if p, ok := fieldPath(ae.Field, rename); ok {
		diags.AddAttributeError(p, summary, detail(strings.TrimPrefix(ae.Message, ae.Field+": ")))
		return
	}
	diags.AddError(summary, detail(ae.Message))
}

var (
	fieldStep  = regexp.MustCompile(`^([a-z_][a-z0-9_]*)((?:\[\d+\])*)$`)
	fieldIndex = regexp.MustCompile(`\d+`)
)

// fieldPath turns an API field ("auth[0].secret") into an attribute path.
// rename maps the API's top-level names to the resource's where they
// differ ("password" is "password_wo").
func fieldPath(field string, rename map[string]string) (path.Path, bool) {
	if field == "" {
		return path.Empty(), false
	}
	var p path.Path
	for i, step := range strings.Split(field, ".") {
		m := fieldStep.FindStringSubmatch(step)
		if m == nil {
			return path.Empty(), false
		}
		name := m[1]
		if i == 0 {
			if r, ok := rename[name]; ok {
				name = r
			}
			p = path.Root(name)
		} else {
			p = p.AtName(name)
		}
		for _, idx := range fieldIndex.FindAllString(m[2], -1) {
			n, _ := strconv.Atoi(idx)
			p = p.AtListIndex(n)
		}
	}
	return p, true
}

// objectPath joins escaped path elements under /v1.
func objectPath(elems ...string) string {
	var b strings.Builder
	b.WriteString("/v1")
	for _, e := range elems {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(e))
	}
	return b.String()
}

// createOnly is the header of a create: it fails when the object exists
// instead of taking it over, so that an object made outside Terraform is
// imported, never overwritten.
var createOnly = apiclient.Header{Name: "If-None-Match", Value: "*"}

// addCreateError adds a create failure, suggesting an import when the object
// exists already.
func addCreateError(diags *diag.Diagnostics, what, importID string, err error, rename map[string]string) {
	var ae *model.Error
	if errors.As(err, &ae) && ae.Status == http.StatusPreconditionFailed && ae.Code == "AlreadyExists" {
		diags.AddError("Object Already Exists",
			fmt.Sprintf("%s already exists on the control plane. Import it with `terraform import <address> %s` to manage it with Terraform.", what, importID))
		return
	}
	addAPIError(diags, "Cannot Create "+what, err, rename)
}

// waitRollout waits until the nodes of zones (every connected node when
// zones is nil) serve store revision rev, bounded by ctx. It asks the API
// in steps so that a long timeout needs no long-lived request.
func waitRollout(ctx context.Context, c *apiclient.Client, rev uint64, zones []string, what string) diag.Diagnostics {
	var diags diag.Diagnostics
	tflog.Debug(ctx, "waiting for the data plane", map[string]any{"revision": rev, "zones": zones})
	var last *model.Rollout
	for final := false; !final; {
		wait := rolloutPoll
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl)-rolloutMargin)
		}
		if wait <= 0 {
			// The last look: what the nodes serve now, for the report.
			wait, final = 0, true
		}
		r, err := c.WaitRollout(ctx, rev, zones, wait)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			addAPIError(&diags, "Cannot Wait for the Data Plane", err, nil)
			return diags
		}
		last = r
		if r.Complete {
			tflog.Debug(ctx, "the data plane serves the change", map[string]any{"revision": rev, "nodes": len(r.Nodes)})
			return diags
		}
		if r.Rejected {
			diags.AddError("The Data Plane Rejected the Change",
				fmt.Sprintf("%s was stored (revision %d), but %s.%s", what, rev, r.Message, rolloutDetail(r, rev)))
			return diags
		}
	}
	msg := fmt.Sprintf("%s was stored (revision %d), but not every data-plane node serves it before the timeout.", what, rev)
	if last != nil {
		msg += rolloutDetail(last, rev)
	}
	msg += "\nRaise the resource's timeouts or bring the missing nodes up; the next apply waits again."
	diags.AddError("Timed Out Waiting for the Data Plane", msg)
	return diags
}

// rolloutDetail names the zones and nodes that do not serve rev yet.
func rolloutDetail(r *model.Rollout, rev uint64) string {
	var b strings.Builder
	if len(r.ZonesWithoutNodes) > 0 {
		fmt.Fprintf(&b, "\nZones with no connected node: %s.", strings.Join(r.ZonesWithoutNodes, ", "))
	}
	for _, n := range r.Nodes {
		if n.Connected && n.AckedRevision >= rev && n.AckedVersion != "" {
			continue
		}
		state := "connected"
		if !n.Connected {
			state = "not connected"
		}
		fmt.Fprintf(&b, "\nNode %s (zone %s, %s) serves revision %d", n.ID, n.Zone, state, n.AckedRevision)
		if n.BuildError != "" {
			fmt.Fprintf(&b, "; the control plane cannot build its configuration: %s", n.BuildError)
		}
		if n.LastNack != nil {
			fmt.Fprintf(&b, "; it last rejected version %s: %s", n.LastNack.Version, n.LastNack.Message)
		}
		b.WriteString(".")
	}
	return b.String()
}

// stringOrNull is a string attribute's value from the API: "" is null.
func stringOrNull(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

// stringList is a list of strings from the API: nil or empty is an empty
// list, so that an optional list left out and an empty one read the same.
func stringList(ss []string) types.List {
	vals := make([]attr.Value, 0, len(ss))
	for _, s := range ss {
		vals = append(vals, types.StringValue(s))
	}
	l, _ := types.ListValue(types.StringType, vals)
	return l
}

// listStrings is the Go value of a known list of strings.
func listStrings(ctx context.Context, l types.List, diags *diag.Diagnostics) []string {
	if l.IsNull() || l.IsUnknown() {
		return nil
	}
	out := []string{}
	diags.Append(l.ElementsAs(ctx, &out, false)...)
	return out
}

// withTimeout bounds ctx by a timeouts block's value (defaultTimeout when
// it sets none).
func withTimeout(ctx context.Context, get func(context.Context, time.Duration) (time.Duration, diag.Diagnostics), diags *diag.Diagnostics) (context.Context, context.CancelFunc, bool) {
	d, ds := get(ctx, defaultTimeout)
	diags.Append(ds...)
	if ds.HasError() {
		return ctx, func() {}, false
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, true
}

// unknownFields names the API fields whose configuration value is not
// (fully) known yet: plan-time validation leaves them to apply.
func unknownFields(ctx context.Context, fields map[string]attr.Value) map[string]bool {
	out := map[string]bool{}
	for name, v := range fields {
		tv, err := v.ToTerraformValue(ctx)
		if err != nil || !tv.IsFullyKnown() {
			out[name] = true
		}
	}
	return out
}

// validateWithModel reports the control plane's own validation of an
// object built from the configuration, so that what the API would refuse
// at apply is refused at plan. Errors on fields not known yet are left
// for the API to judge at apply.
func validateWithModel(err error, unknown map[string]bool, rename map[string]string, diags *diag.Diagnostics) {
	if err == nil {
		return
	}
	es, ok := model.AsFieldErrors(err)
	if !ok {
		diags.AddError("Invalid Configuration", err.Error())
		return
	}
	for _, fe := range es {
		top, _, _ := strings.Cut(fe.Field, ".")
		top, _, _ = strings.Cut(top, "[")
		if unknown[top] {
			continue
		}
		if p, ok := fieldPath(fe.Field, rename); ok {
			diags.AddAttributeError(p, "Invalid Attribute Value", fe.Message)
		} else {
			diags.AddError("Invalid Configuration", fe.Error())
		}
	}
}

// deleteObject deletes an object; one that is gone already is not an
// error. It returns the store revision of the delete (0 when it was gone).
func deleteObject(ctx context.Context, c *apiclient.Client, objPath, what string, diags *diag.Diagnostics) uint64 {
	var out model.Deleted
	if err := c.Do(ctx, "DELETE", objPath, nil, &out); err != nil {
		if model.IsNotFound(err) {
			return 0
		}
		addAPIError(diags, "Cannot Delete "+what, err, nil)
		return 0
	}
	return out.Revision
}

// splitImportID parses an import id of the form format ("proxy/target"),
// naming the expected form when id does not have it.
func splitImportID(id, format string) ([]string, error) {
	want := strings.Count(format, "/") + 1
	parts := strings.Split(id, "/")
	if len(parts) != want || slices.Contains(parts, "") {
		return nil, fmt.Errorf("the import id must have the form %q, got %q", format, id)
	}
	return parts, nil
}

// readObject is the Read step of a resource: it GETs objPath into out and
// reports whether the object exists. A 404 removes the resource from the
// state (it was deleted outside Terraform and is planned again); any other
// failure becomes a diagnostic.
func readObject(ctx context.Context, c *apiclient.Client, objPath string, out any, summary string, rename map[string]string,
	state *tfsdk.State, diags *diag.Diagnostics) bool {
	if err := c.Do(ctx, "GET", objPath, nil, out); err != nil {
		if model.IsNotFound(err) {
			state.RemoveResource(ctx)
			return false
		}
		addAPIError(diags, summary, err, rename)
		return false
	}
	return true
}
