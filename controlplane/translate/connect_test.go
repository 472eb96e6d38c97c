package translate

import (
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

func connectState() *model.State {
	allow := func(res string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"` + res + `"}]}`
	}
	return &model.State{
		Secrets: []model.Secret{{Name: "admin", Username: "admin", Password: "pw"}, {Name: "app", Username: "app", Password: "pw2"}},
		Proxies: []model.Proxy{
			{Name: "main", Zones: []string{"a"}, Port: 6000, Auth: []model.Auth{
				{Secret: "admin", IAMAuth: vocab.IAMAuthRequired},
				{Secret: "app"},
			}},
			{Name: "other", Zones: []string{"b"}, Port: 6001, Auth: []model.Auth{{Secret: "admin", IAMAuth: vocab.IAMAuthRequired}}},
			{Name: "plain", Zones: []string{"c"}, Port: 6002, Auth: []model.Auth{{Secret: "app"}}},
		},
		Users: []model.User{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}, {Name: model.RootUser}},
		AccessKeys: []model.AccessKey{
			{ID: "AKALICE", User: "alice", Status: model.KeyActive, SecretAccessKey: "alice-secret"},
			{ID: "AKBOB", User: "bob", Status: model.KeyActive, SecretAccessKey: "bob-secret"},
			{ID: "AKCAROL", User: "carol", Status: model.KeyActive, SecretAccessKey: "carol-secret"},
			{ID: "AKDAVE1", User: "dave", Status: model.KeyActive, SecretAccessKey: "dave-secret-1"},
			{ID: "AKDAVE2", User: "dave", Status: model.KeyInactive, SecretAccessKey: "dave-secret-2"},
			{ID: "AKROOT", User: model.RootUser, Status: model.KeyActive, SecretAccessKey: "root-secret"},
		},
		Policies: []model.Policy{
			{Name: "alice", Document: allow("proxy/main/dbuser/admin")},
			// Everything but main.
			{Name: "bob", Document: `{"Version":"2012-10-17","Statement":[
				{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/*/dbuser/*"},
				{"Effect":"Deny","Action":"dbproxy:*","Resource":"proxy/main/*"}]}`},
			// Allowed the DISABLED block's user only: tokens are not
			// accepted for it, so the grant is of no use and not pushed.
			{Name: "carol", Document: allow("proxy/main/dbuser/app")},
			{Name: "dave", Document: allow("proxy/*")},
			{Name: "dave2", Document: allow("proxy/main/dbuser/adm?n")},
		},
		Attachments: []model.Attachment{
			{User: "alice", Policy: "alice"}, {User: "bob", Policy: "bob"}, {User: "carol", Policy: "carol"},
			{User: "dave", Policy: "dave"}, {User: "dave", Policy: "dave2"},
		},
	}
}

func connectKeysOf(t *testing.T, res map[resource.Type][]types.Resource) (xdsapi.ConnectKeys, bool) {
	t.Helper()
	for _, r := range res[resource.SecretType] {
		s := r.(*tlsv3.Secret)
		if s.GetName() != xdsapi.ConnectKeysSecret {
			continue
		}
		var ck xdsapi.ConnectKeys
		if err := json.Unmarshal(s.GetGenericSecret().GetSecrets()[xdsapi.ConnectKeysKey].GetInlineBytes(), &ck); err != nil {
			t.Fatal(err)
		}
		return ck, true
	}
	return xdsapi.ConnectKeys{}, false
}

func TestConnectKeys(t *testing.T) {
	now := time.Date(2026, 12, 1, 23, 30, 0, 0, time.UTC)
	opts := Options{Now: now, Region: "eu-test-1"}
	signing := func(secret, date string) string {
		return hex.EncodeToString(sigv4.SigningKey(secret, sigv4.Scope{Date: date, Region: "eu-test-1", Service: sigv4.ServiceRDS}))
	}
	keysFor := func(secret string) map[string]string {
		return map[string]string{"20261130": signing(secret, "20261130"), "20261201": signing(secret, "20261201"), "20261202": signing(secret, "20261202")}
	}

	res, v1 := mustResources(t, connectState(), "a", opts)
	got, ok := connectKeysOf(t, res)
	if !ok {
		t.Fatalf("zone a serves a proxy requiring IAM auth but got no %s", xdsapi.ConnectKeysSecret)
	}
	want := xdsapi.ConnectKeys{Region: "eu-test-1", Keys: []xdsapi.ConnectKey{
		{AccessKeyID: "AKALICE", User: "alice", SigningKeys: keysFor("alice-secret"), Allow: []xdsapi.ConnectGrant{{Proxy: "main", DBUser: "admin"}}},
		{AccessKeyID: "AKDAVE1", User: "dave", SigningKeys: keysFor("dave-secret-1"), Allow: []xdsapi.ConnectGrant{{Proxy: "main", DBUser: "admin"}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("zone a connect keys\n got %+v\nwant %+v", got, want)
	}
	for _, typ := range xdsapi.ResourceTypes() {
		for _, r := range res[typ] {
			b, err := proto.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{"alice-secret", "dave-secret-1", "root-secret"} {
				if strings.Contains(string(b), secret) {
					t.Errorf("a secret access key (%s) reached the node", secret)
				}
			}
		}
	}

	// Zone b: proxy other; bob's Allow on proxy/* is not undone there.
	res, _ = mustResources(t, connectState(), "b", opts)
	got, _ = connectKeysOf(t, res)
	var ids []string
	for _, k := range got.Keys {
		ids = append(ids, k.AccessKeyID)
	}
	if !reflect.DeepEqual(ids, []string{"AKBOB", "AKDAVE1"}) {
		t.Fatalf("zone b keys %v, want AKBOB and AKDAVE1", ids)
	}

	// Zone c serves only password auth: no connect keys at all.
	res, _ = mustResources(t, connectState(), "c", opts)
	if _, ok := connectKeysOf(t, res); ok {
		t.Fatalf("zone c got connect keys without a proxy requiring IAM auth")
	}

	// The same state at the same day hashes the same; the next day does
	// not (new signing keys); a disabled key changes it at once.
	if _, v := mustResources(t, connectState(), "a", Options{Now: now.Add(-time.Hour), Region: "eu-test-1"}); v != v1 {
		t.Errorf("an hour earlier on the same day: version %s, want %s", v, v1)
	}
	if _, v := mustResources(t, connectState(), "a", Options{Now: now.Add(time.Hour), Region: "eu-test-1"}); v == v1 {
		t.Errorf("the next day kept version %s", v)
	}
	st := connectState()
	st.AccessKeys[0].Status = model.KeyInactive
	res, v := mustResources(t, st, "a", opts)
	if v == v1 {
		t.Errorf("disabling a key kept version %s", v)
	}
	got, _ = connectKeysOf(t, res)
	if len(got.Keys) != 1 || got.Keys[0].AccessKeyID != "AKDAVE1" {
		t.Errorf("after disabling alice's key: %+v", got.Keys)
	}
	// With no key allowed, the secret is still there, empty: listeners
	// wait for it.
	st.AccessKeys[3].Status = model.KeyInactive
	res, _ = mustResources(t, st, "a", opts)
	if got, ok := connectKeysOf(t, res); !ok || len(got.Keys) != 0 {
		t.Errorf("no allowed keys: %+v, %v; want an empty secret", got, ok)
	}
}
