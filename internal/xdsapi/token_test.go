package xdsapi

import (
	"context"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

func TestNodeTokenVerifies(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	creds := sigv4.Credentials{AccessKeyID: "DBPKNODE", SecretAccessKey: "node-secret"}
	tok, err := NodeToken(context.Background(), "127.0.0.1:18000", NodeInfo{ID: "node-a", Zone: "a"}, "local", creds, now)
	if err != nil {
		t.Fatal(err)
	}
	v := &sigv4.Verifier{Region: "local", Now: func() time.Time { return now.Add(time.Minute) },
		Lookup: func(_ context.Context, id string) (string, error) {
			if id != creds.AccessKeyID {
				return "", sigv4.ErrUnknownKey
			}
			return creds.SecretAccessKey, nil
		}}
	got, err := v.VerifyToken(context.Background(), tok, sigv4.ServiceAPI)
	if err != nil {
		t.Fatal(err)
	}
	if got.Action != NodeTokenAction || got.Params.Get(NodeTokenNodeParam) != "node-a" || got.Params.Get(NodeTokenZoneParam) != "a" {
		t.Fatalf("token %+v", got)
	}
	if d := got.Expires.Sub(got.SignedAt); d != NodeTokenLifetime {
		t.Fatalf("lifetime %s, want %s", d, NodeTokenLifetime)
	}
}
