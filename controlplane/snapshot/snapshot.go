// Package snapshot builds the xDS snapshot each node should serve from
// the desired state: the state is read once per store revision, and a
// snapshot is translated once per (zone, node address) within an epoch
// (the node certificate period and the UTC day), so that nodes sharing
// both share one snapshot.
package snapshot

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/controlplane/translate"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// CertIssuer issues a node's serving certificate for its address.
type CertIssuer interface {
	NodeCert(address string, now time.Time) (pki.NodeCert, error)
}

// Options configure a Builder; Store and CA are required.
type Options struct {
	Store  store.Store
	CA     CertIssuer
	Region string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Builder builds and memoises node snapshots.
type Builder struct {
	opts Options
	// mu caches the state of one revision and the snapshots built from
	// it.
	mu struct {
		sync.Mutex
		state *model.State
		snaps map[string]*cache.Snapshot
		// epoch is the certificate period and day the snapshots were
		// built for; a new one empties snaps, so that snapshots with
		// old certificates and signing keys do not pile up while no
		// commit comes.
		epoch string
	}
}

// New returns a Builder.
func New(opts Options) *Builder {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Builder{opts: opts}
}

// Build assembles the snapshot a node should serve now. A refresh builds
// every node's snapshot from the same revision, so the state is read once
// per revision and a snapshot is translated once per (zone, address): nodes
// that share both get the same snapshot.
func (b *Builder) Build(ctx context.Context, node xdsapi.NodeInfo) (*cache.Snapshot, uint64, error) {
	st, err := b.State(ctx)
	if err != nil {
		return nil, 0, err
	}
	// Snapshots are cached per (zone, address) within an epoch, the
	// certificate period and the day: a new period means new node
	// certificates, a new day new connect signing keys, even when the
	// state has not changed.
	now := b.opts.Now()
	epoch := strconv.FormatInt(pki.NodeCertPeriod(now), 10) + "\x00" + sigv4.ScopeDate(now)
	key := node.Zone + "\x00" + node.Address
	b.mu.Lock()
	if b.mu.epoch != epoch {
		b.mu.epoch = epoch
		b.mu.snaps = map[string]*cache.Snapshot{}
	}
	snap, ok := b.mu.snaps[key]
	b.mu.Unlock()
	if ok {
		return snap, st.Revision, nil
	}
	opts := translate.Options{Now: now, Region: b.opts.Region}
	if node.Address != "" {
		c, err := b.opts.CA.NodeCert(node.Address, now)
		if err != nil {
			return nil, 0, err
		}
		opts.NodeTLS = &translate.TLSMaterial{CertPEM: c.CertPEM, KeyPEM: c.KeyPEM}
	}
	snap, err = translate.Snapshot(st, node, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("translate revision %d for node %s: %w", st.Revision, node.ID, err)
	}
	// Several nodes may share this snapshot; its lazily built version map
	// is built now, before anyone else can see it, so that later readers
	// only read.
	if err := snap.ConstructVersionMap(); err != nil {
		return nil, 0, fmt.Errorf("hash snapshot for node %s: %w", node.ID, err)
	}
	b.mu.Lock()
	if b.mu.state == st && b.mu.epoch == epoch {
		b.mu.snaps[key] = snap
	}
	b.mu.Unlock()
	return snap, st.Revision, nil
}

// State returns the desired state at the store's newest revision, read
// once per revision.
func (b *Builder) State(ctx context.Context) (*model.State, error) {
	b.mu.Lock()
	cur := b.mu.state
	b.mu.Unlock()
	if cur != nil && cur.Revision == b.opts.Store.Revision() {
		return cur, nil
	}
	st, err := ReadState(ctx, b.opts.Store)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.state == nil || st.Revision > b.mu.state.Revision {
		b.mu.state = st
		b.mu.snaps = map[string]*cache.Snapshot{}
	}
	return st, nil
}

// ReadState reads the whole desired state in one consistent view.
func ReadState(ctx context.Context, st store.Store) (*model.State, error) {
	var out model.State
	rev, err := st.View(ctx, func(r store.Reader) error {
		var err error
		if out.Secrets, err = store.DecodeAll[model.Secret](r, model.KindSecret, ""); err != nil {
			return err
		}
		if out.Proxies, err = store.DecodeAll[model.Proxy](r, model.KindProxy, ""); err != nil {
			return err
		}
		if out.TargetGroups, err = store.DecodeAll[model.TargetGroup](r, model.KindTargetGroup, ""); err != nil {
			return err
		}
		if out.Targets, err = store.DecodeAll[model.Target](r, model.KindTarget, ""); err != nil {
			return err
		}
		if out.Endpoints, err = store.DecodeAll[model.Endpoint](r, model.KindEndpoint, ""); err != nil {
			return err
		}
		// Access keys, policies and attachments decide who may connect
		// with a token.
		if out.AccessKeys, err = store.DecodeAll[model.AccessKey](r, model.KindAccessKey, ""); err != nil {
			return err
		}
		if out.Policies, err = store.DecodeAll[model.Policy](r, model.KindPolicy, ""); err != nil {
			return err
		}
		if out.Attachments, err = store.DecodeAll[model.Attachment](r, model.KindAttachment, ""); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	out.Revision = rev
	return &out, nil
}
