package tokenauth

import (
	"context"
	"encoding/hex"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

func TestCheck(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	secret := "the-secret"
	signing := func(date, region, service string) string {
		return hex.EncodeToString(sigv4.SigningKey(secret, sigv4.Scope{Date: date, Region: region, Service: service}))
	}
	ck := &xdsapi.ConnectKeys{Region: "r1", Keys: []xdsapi.ConnectKey{{
		AccessKeyID: "AK1", User: "alice",
		// Only today's key: a token of another day has none here.
		SigningKeys: map[string]string{"20261201": signing("20261201", "r1", sigv4.ServiceRDS)},
		Allow:       []xdsapi.ConnectGrant{{Proxy: "main", DBUser: "app"}},
	}}}
	v, err := New(ck, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	mk := func(action, service, region string, params url.Values, signedAt time.Time, id, key string) string {
		t.Helper()
		tok, err := sigv4.Presign(context.Background(), "db:6033", action, params, service, region, 15*time.Minute,
			sigv4.Credentials{AccessKeyID: id, SecretAccessKey: key}, signedAt)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	user := url.Values{"DBUser": {"app"}}
	good := mk(ConnectAction, sigv4.ServiceRDS, "r1", user, now, "AK1", secret)
	id, err := v.Check(context.Background(), good, "main", "app")
	if err != nil || id.AccessKeyID != "AK1" || id.User != "alice" {
		t.Fatalf("good token: %+v, %v", id, err)
	}
	for _, tc := range []struct {
		name, token, proxy, user string
		is                       error
		says                     string
	}{
		{"a password", "hunter2", "main", "app", sigv4.ErrMalformed, "the password is not a connect token"},
		{"empty", "", "main", "app", sigv4.ErrMissingAuth, "not a connect token"},
		{"another proxy", good, "other", "app", ErrNotAllowed, "access key AK1 (user alice) is not allowed to connect as app through proxy other"},
		{"another user", good, "main", "root", nil, "for another database user"},
		{"expired", mk(ConnectAction, sigv4.ServiceRDS, "r1", user, now.Add(-16*time.Minute), "AK1", secret), "main", "app", sigv4.ErrExpired, "has expired"},
		{"from the future", mk(ConnectAction, sigv4.ServiceRDS, "r1", user, now.Add(time.Hour), "AK1", secret), "main", "app", sigv4.ErrClockSkew, "in the future"},
		{"wrong secret", mk(ConnectAction, sigv4.ServiceRDS, "r1", user, now, "AK1", "guess"), "main", "app", sigv4.ErrBadSignature, "signature does not match"},
		{"unknown key", mk(ConnectAction, sigv4.ServiceRDS, "r1", user, now, "AK2", secret), "main", "app", sigv4.ErrUnknownKey, "access key AK2 may not connect through this node"},
		{"other region", mk(ConnectAction, sigv4.ServiceRDS, "r2", user, now, "AK1", secret), "main", "app", sigv4.ErrWrongRegion, "another region or service"},
		{"node token service", mk(ConnectAction, sigv4.ServiceAPI, "r1", user, now, "AK1", secret), "main", "app", sigv4.ErrWrongService, "another region or service"},
		{"other action", mk("ReceiveConfig", sigv4.ServiceRDS, "r1", user, now, "AK1", secret), "main", "app", nil, `action is "ReceiveConfig"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Check(context.Background(), tc.token, tc.proxy, tc.user)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not match %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if strings.Contains(err.Error(), "X-Amz") || (len(tc.token) > 8 && strings.Contains(err.Error(), tc.token)) {
				t.Errorf("error quotes the token: %q", err)
			}
		})
	}
	// No keys pushed: every token is refused.
	var none *Verifier
	if _, err := none.Check(context.Background(), good, "main", "app"); err == nil {
		t.Fatal("a nil verifier accepted a token")
	}
	empty, _ := New(nil, func() time.Time { return now })
	local := mk(ConnectAction, sigv4.ServiceRDS, sigv4.DefaultRegion, user, now, "AK1", secret)
	if _, err := empty.Check(context.Background(), local, "main", "app"); !errors.Is(err, sigv4.ErrUnknownKey) {
		t.Fatalf("no keys: %v", err)
	}
	// Just after midnight a token signed before it is still valid, but
	// this node was pushed only the new day's key.
	midnight := time.Date(2026, 12, 2, 0, 5, 0, 0, time.UTC)
	late, _ := New(&xdsapi.ConnectKeys{Region: "r1", Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK1", User: "alice",
		SigningKeys: map[string]string{"20261202": signing("20261202", "r1", sigv4.ServiceRDS)},
		Allow:       []xdsapi.ConnectGrant{{Proxy: "main", DBUser: "app"}}}}}, func() time.Time { return midnight })
	before := mk(ConnectAction, sigv4.ServiceRDS, "r1", user, midnight.Add(-7*time.Minute), "AK1", secret)
	if _, err := late.Check(context.Background(), before, "main", "app"); err == nil || !strings.Contains(err.Error(), "no signing key for 20261201") {
		t.Fatalf("token of the day before, key of the day only: %v", err)
	}
	if _, err := late.Check(context.Background(), mk(ConnectAction, sigv4.ServiceRDS, "r1", user, midnight, "AK1", secret), "main", "app"); err != nil {
		t.Fatalf("token of the new day: %v", err)
	}
	if _, err := New(&xdsapi.ConnectKeys{Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK", SigningKeys: map[string]string{"20261201": "zz-secret-material"}}}}, nil); err == nil || strings.Contains(err.Error(), "secret-material") {
		t.Fatalf("bad hex: %v", err)
	}
}

// TestRememberedTokensExpire: a token checked once is remembered, but
// only until it expires, and only for the grants of its own verifier.
func TestRememberedTokensExpire(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := start
	date := sigv4.ScopeDate(start)
	keys := &xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK1",
		SigningKeys: map[string]string{date: hex.EncodeToString(sigv4.SigningKey("s", sigv4.Scope{Date: date, Region: sigv4.DefaultRegion, Service: sigv4.ServiceRDS}))},
		Allow:       []xdsapi.ConnectGrant{{Proxy: "main", DBUser: "app"}}}}}
	v, _ := New(keys, func() time.Time { return clock })
	tok, _ := sigv4.Presign(context.Background(), "db:6033", ConnectAction, url.Values{"DBUser": {"app"}}, sigv4.ServiceRDS, sigv4.DefaultRegion,
		15*time.Minute, sigv4.Credentials{AccessKeyID: "AK1", SecretAccessKey: "s"}, start)
	for _, at := range []time.Duration{0, time.Minute, 14 * time.Minute} {
		clock = start.Add(at)
		if _, err := v.Check(context.Background(), tok, "main", "app"); err != nil {
			t.Fatalf("at +%s: %v", at, err)
		}
	}
	// Remembered or not, the grant and the user are checked every time.
	if _, err := v.Check(context.Background(), tok, "other", "app"); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("remembered token on another proxy: %v", err)
	}
	if _, err := v.Check(context.Background(), tok, "main", "root"); err == nil {
		t.Fatal("remembered token as another user")
	}
	clock = start.Add(15 * time.Minute)
	if _, err := v.Check(context.Background(), tok, "main", "app"); !errors.Is(err, sigv4.ErrExpired) {
		t.Fatalf("remembered token after its expiry: %v", err)
	}
	// Keys without the grant make a new verifier, which remembers nothing.
	clock = start
	revoked, _ := New(&xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{}}, func() time.Time { return clock })
	if _, err := v.Check(context.Background(), tok, "main", "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := revoked.Check(context.Background(), tok, "main", "app"); !errors.Is(err, sigv4.ErrUnknownKey) {
		t.Fatalf("token of a revoked key: %v", err)
	}
}

func TestCommon(t *testing.T) {
	g1, g2 := xdsapi.ConnectGrant{Proxy: "p", DBUser: "u1"}, xdsapi.ConnectGrant{Proxy: "p", DBUser: "u2"}
	a := &xdsapi.ConnectKeys{Region: "r", Keys: []xdsapi.ConnectKey{
		{AccessKeyID: "K1", SigningKeys: map[string]string{"d1": "a", "d2": "b"}, Allow: []xdsapi.ConnectGrant{g1, g2}},
		{AccessKeyID: "K2", SigningKeys: map[string]string{"d1": "c"}, Allow: []xdsapi.ConnectGrant{g1}},
		{AccessKeyID: "K3", SigningKeys: map[string]string{"d1": "e"}, Allow: []xdsapi.ConnectGrant{g1}},
	}}
	b := &xdsapi.ConnectKeys{Region: "r", Keys: []xdsapi.ConnectKey{
		// K1 lost a grant and a day, K2 is gone, K3 has another key (a
		// new secret), K4 is new.
		{AccessKeyID: "K1", SigningKeys: map[string]string{"d2": "b", "d3": "x"}, Allow: []xdsapi.ConnectGrant{g2}},
		{AccessKeyID: "K3", SigningKeys: map[string]string{"d1": "other"}, Allow: []xdsapi.ConnectGrant{g1}},
		{AccessKeyID: "K4", SigningKeys: map[string]string{"d1": "f"}, Allow: []xdsapi.ConnectGrant{g1}},
	}}
	got := Common(a, b)
	want := &xdsapi.ConnectKeys{Region: "r", Keys: []xdsapi.ConnectKey{
		{AccessKeyID: "K1", SigningKeys: map[string]string{"d2": "b"}, Allow: []xdsapi.ConnectGrant{g2}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Common\n got %+v\nwant %+v", got, want)
	}
	if Common(nil, b) != nil || Common(a, nil) != nil {
		t.Fatal("Common with a missing side kept keys")
	}
	b.Region = "other"
	if Common(a, b) != nil {
		t.Fatal("Common across regions kept keys")
	}
}

// BenchmarkCheck measures verifying one connect token, the work a token
// login adds over a password login.
func BenchmarkCheck(b *testing.B) {
	now := time.Now()
	date := sigv4.ScopeDate(now)
	keys := &xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK1",
		SigningKeys: map[string]string{date: hex.EncodeToString(sigv4.SigningKey("s", sigv4.Scope{Date: date, Region: sigv4.DefaultRegion, Service: sigv4.ServiceRDS}))},
		Allow:       []xdsapi.ConnectGrant{{Proxy: "main", DBUser: "app"}}}}}
	v, err := New(keys, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := sigv4.Presign(context.Background(), "db:6033", ConnectAction, url.Values{"DBUser": {"app"}}, sigv4.ServiceRDS, sigv4.DefaultRegion,
		15*time.Minute, sigv4.Credentials{AccessKeyID: "AK1", SecretAccessKey: "s"}, now)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("first login", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			fresh, _ := New(keys, nil)
			b.StartTimer()
			if _, err := fresh.Check(context.Background(), tok, "main", "app"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("token seen before", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Check(context.Background(), tok, "main", "app"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
