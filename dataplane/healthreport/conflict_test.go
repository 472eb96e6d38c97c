package healthreport_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/dbproxy/dbproxy/controlplane/health"
	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// TestWriterConflictReachesControlPlane runs a node in front of two
// servers that both accept writes: the control plane's health service
// shows both UNAVAILABLE, discovered role WRITER, with the conflict as the
// reason, and AVAILABLE again once one of them is read_only=1.
func TestWriterConflictReachesControlPlane(t *testing.T) {
	a := mysqltest.StartT(t, mysqltest.Options{})
	b := mysqltest.StartT(t, mysqltest.Options{})
	for _, s := range []*mysqltest.Server{a, b} {
		nodetest.PrepareServer(t, s)
	}
	cfg := nodetest.Config(a, b)
	env := nodetest.Start(t, cfg, a, b)
	waitServing(t, env.Node, "main", "rw")

	auth := identity.AuthorizerFunc(func(_ context.Context, md metadata.MD, n xdsapi.NodeInfo) error {
		if v := md.Get(xdsapi.TokenMetadataKey); len(v) != 1 || v[0] != "tok-"+n.ID {
			return errors.New("refused")
		}
		return nil
	})
	svc, err := health.New(health.Options{Authorizer: auth, Logger: mysqltest.TestLogger(t).Named("hds"), Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	gs := testutil.ServeGRPC(t, "127.0.0.1:0", svc.Register, svc.Close)
	defer gs.Stop()
	o := validOptions()
	o.Target = gs.Addr
	o.Snapshot = healthreport.FromNode(env.Node)
	o.Logger = mysqltest.TestLogger(t).Named("reporter")
	o.PollInterval = 20 * time.Millisecond
	r, err := healthreport.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	}()

	for _, name := range []string{"db1", "db2"} {
		testutil.Eventually(t, waitFor, name+" UNAVAILABLE for the conflict", func() bool {
			th := svc.TargetHealth("main", name)
			return th.Health == health.HealthUnavailable && len(th.Reports) == 1 &&
				strings.HasPrefix(th.Reports[0].Reason, backend.ConflictReasonPrefix+": targets db1 and db2")
		})
		if th := svc.TargetHealth("main", name); th.Role != health.RoleWriter {
			t.Fatalf("%s discovered role = %q, want WRITER", name, th.Role)
		}
	}

	if err := b.Exec(t.Context(), "SET GLOBAL read_only=ON"); err != nil {
		t.Fatal(err)
	}
	for name, role := range map[string]string{"db1": health.RoleWriter, "db2": health.RoleReader} {
		testutil.Eventually(t, waitFor, name+" AVAILABLE after the conflict", func() bool {
			th := svc.TargetHealth("main", name)
			return th.Health == health.HealthAvailable && th.Role == role && len(th.Reports) == 1 && th.Reports[0].Reason == ""
		})
	}
}
