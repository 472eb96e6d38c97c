package healthreport

import (
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// FromNode builds a Snapshot func from a node: every proxy the node serves
// with its targets' last health check (Target.Health) and role
// (Target.Role). A target of role AUTO that the node never reached has no
// discovered role yet (""), rather than the WRITER it would default to. A
// target fenced because another one accepts writes too is reported
// unhealthy with the conflict as its reason (backend.ConflictReasonPrefix).
func FromNode(n *node.Node) func() []ProxyHealth {
	return func() []ProxyHealth {
		cfg := n.Config()
		if cfg == nil {
			return nil
		}
		var out []ProxyHealth
		for _, p := range cfg.Proxies {
			targets := n.Targets(p.Name)
			if len(targets) == 0 {
				// Not served in this node's zone.
				continue
			}
			ph := ProxyHealth{Proxy: p.Name, Targets: make([]TargetHealth, 0, len(targets))}
			for _, t := range targets {
				c, h := t.Config(), t.Health()
				th := TargetHealth{Name: c.Name, Host: c.Host, Port: c.Port, Zone: c.Zone, Healthy: h.Healthy}
				switch conflict := t.Conflict(); {
				case h.CheckedAt.IsZero():
					th.Unchecked = true
				case !h.Healthy:
					th.Reason = h.LastError
				case conflict != "":
					// The server answers, but the node sends it nothing
					// (another target accepts writes too); the wire
					// format carries a reason only for UNHEALTHY, which
					// is also what the proxy makes of it.
					th.Healthy = false
					th.Reason = conflict
				}
				// Version is set by the first successful check and kept
				// after failures: it says read_only was seen.
				if c.Role == vocab.RoleWriter || c.Role == vocab.RoleReader || h.Version != "" {
					th.Role = t.Role()
				}
				ph.Targets = append(ph.Targets, th)
			}
			out = append(out, ph)
		}
		return out
	}
}
