package store

import (
	"encoding/json"
	"fmt"
)

// DecodeAll decodes every object of kind whose key starts with prefix, in
// key order, as JSON into T.
func DecodeAll[T any](r Reader, kind, prefix string) ([]T, error) {
	objs, err := r.List(kind, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		var v T
		if err := json.Unmarshal(o.Value, &v); err != nil {
			return nil, fmt.Errorf("decode %s/%s: %w", kind, o.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}
