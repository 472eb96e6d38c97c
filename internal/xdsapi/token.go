package xdsapi

import (
	"context"
	"net/url"
	"time"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// The node token: a SigV4 presigned query string (service sigv4.ServiceAPI)
// for the control plane's xDS address, with Action NodeTokenAction and the
// node's id and zone as parameters. Nodes send it in TokenMetadataKey; the
// control plane checks that it names the node the requests name.
const (
	NodeTokenAction    = "ReceiveConfig"
	NodeTokenNodeParam = "NodeId"
	NodeTokenZoneParam = "Zone"
	// NodeTokenLifetime is how long a node token is valid; nodes renew
	// their streams well before (xdsclient.DefaultMaxStreamAge).
	NodeTokenLifetime = 15 * time.Minute
)

// NodeToken signs a fresh token for node to present to the control plane
// at controlPlane (host:port).
func NodeToken(ctx context.Context, controlPlane string, node NodeInfo, region string, creds sigv4.Credentials, now time.Time) (string, error) {
	params := url.Values{}
	params.Set(NodeTokenNodeParam, node.ID)
	params.Set(NodeTokenZoneParam, node.Zone)
	return sigv4.Presign(ctx, controlPlane, NodeTokenAction, params, sigv4.ServiceAPI, region, NodeTokenLifetime, creds, now)
}
