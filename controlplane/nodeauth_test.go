package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/cptest"
)

// TestNodeWithAMalformedZoneIsRefused: a zone no proxy can list (here
// upper case, allowed by a zone/* policy) would give the node an empty
// configuration and no hint; it is refused with the reason instead.
func TestNodeWithAMalformedZoneIsRefused(t *testing.T) {
	cp := cptest.Start(t)
	creds := cp.NodeCredentials("any-zone", "*")
	n := cp.StartNode(cptest.NodeOptions{ID: "n1", Zone: "Zone-A", Host: cptest.ZoneHost(0), Credentials: creds})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(n.Status().LastError, `zone "Zone-A" is not a valid zone name`) {
		if time.Now().After(deadline) {
			t.Fatalf("node status %+v; want a refusal naming the zone", n.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
