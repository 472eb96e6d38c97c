package xdsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/internal/atomicfile"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// cacheFormat is the version of the cache's plaintext layout.
const cacheFormat = 1

// cachedSet is the plaintext of the cache file: the applied version and
// every resource as a marshalled google.protobuf.Any, by type URL.
type cachedSet struct {
	Format    int                 `json:"format"`
	Version   string              `json:"version"`
	Resources map[string][][]byte `json:"resources"`
}

// cacheAD binds the sealed cache to this node, so that a cache file moved
// to another node id does not open.
func (c *Client) cacheAD() []byte {
	return []byte("dbproxy xds cache v1\x00" + c.opts.Node.ID)
}

// applyCache applies the cached set, if any. Problems are logged: a node
// without a usable cache simply waits for the control plane.
func (c *Client) applyCache(ctx context.Context) {
	if c.sealer == nil {
		return
	}
	version, res, err := c.readCache()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.log.Debug("no cached configuration", "file", c.opts.CacheFile)
		return
	case err != nil:
		c.log.Warn("ignoring the cached configuration", "file", c.opts.CacheFile, "error", err)
		return
	}
	if err := c.apply(ctx, version, res); err != nil {
		c.log.Warn("cannot apply the cached configuration", "version", version, "error", err)
		return
	}
	c.log.Info("applied the cached configuration", "version", version)
}

func (c *Client) readCache() (string, map[string][]*anypb.Any, error) {
	sealed, err := os.ReadFile(c.opts.CacheFile)
	if err != nil {
		return "", nil, err
	}
	plain, err := c.sealer.Open(sealed, c.cacheAD())
	if err != nil {
		return "", nil, fmt.Errorf("open sealed cache: %w", err)
	}
	var set cachedSet
	if err := json.Unmarshal(plain, &set); err != nil {
		return "", nil, fmt.Errorf("decode cache: %w", err)
	}
	if set.Format != cacheFormat || set.Version == "" {
		return "", nil, fmt.Errorf("cache format %d, version %q: not usable", set.Format, set.Version)
	}
	res := make(map[string][]*anypb.Any, xdsapi.NumResourceTypes)
	for _, t := range xdsapi.ResourceTypes() {
		raw, ok := set.Resources[t]
		if !ok {
			return "", nil, fmt.Errorf("cache lacks type %s", t)
		}
		list := make([]*anypb.Any, 0, len(raw))
		for _, b := range raw {
			a := &anypb.Any{}
			if err := proto.Unmarshal(b, a); err != nil {
				return "", nil, fmt.Errorf("decode cached %s: %w", t, err)
			}
			list = append(list, a)
		}
		res[t] = list
	}
	return set.Version, res, nil
}

// writeCache stores the applied set; failures are logged (the node keeps
// serving, it only loses static stability across its own restart).
func (c *Client) writeCache(version string, res map[string][]*anypb.Any) {
	if c.sealer == nil {
		return
	}
	if err := c.storeCache(version, res); err != nil {
		c.log.Error("cannot write the configuration cache", "file", c.opts.CacheFile, "error", err)
	}
}

func (c *Client) storeCache(version string, res map[string][]*anypb.Any) error {
	set := cachedSet{Format: cacheFormat, Version: version, Resources: make(map[string][][]byte, len(res))}
	for t, list := range res {
		raw := make([][]byte, 0, len(list))
		for _, a := range list {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
			if err != nil {
				return fmt.Errorf("marshal %s: %w", t, err)
			}
			raw = append(raw, b)
		}
		set.Resources[t] = raw
	}
	plain, err := json.Marshal(set)
	if err != nil {
		return fmt.Errorf("encode cache: %w", err)
	}
	sealed, err := c.sealer.Seal(plain, c.cacheAD())
	if err != nil {
		return fmt.Errorf("seal cache: %w", err)
	}
	return atomicfile.Write(c.opts.CacheFile, sealed, 0o600)
}
