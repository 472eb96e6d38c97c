// Package apiclient is a small client of the control plane's admin API: it
// signs every request with SigV4, trusts the control plane's CA (refusing
// node certificates, see cpident) and turns
// error responses into *model.Error. The Terraform provider, the command line and
// the tests use it.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/internal/cpident"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// Client calls one control plane.
type Client struct {
	base   *url.URL
	creds  sigv4.Credentials
	region string
	http   *http.Client
	now    func() time.Time
	agent  string
}

// Options configure a Client.
type Options struct {
	// Endpoint is the API's base URL ("https://127.0.0.1:8443").
	Endpoint    string
	Credentials sigv4.Credentials
	Region      string
	// CAPEM is the CA to trust; nil uses the system roots.
	CAPEM []byte
	// Timeout bounds one request (default 2 minutes: rollout waits are
	// bounded by their own parameter).
	Timeout time.Duration
	Now     func() time.Time
	// UserAgent, when set, is sent with every request.
	UserAgent string
}

// New returns a client.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(opts.Endpoint, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("endpoint %q: want https://host:port", opts.Endpoint)
	}
	if opts.Credentials.AccessKeyID == "" || opts.Credentials.SecretAccessKey == "" {
		return nil, errors.New("an access key id and a secret access key are required")
	}
	if opts.Region == "" {
		opts.Region = sigv4.DefaultRegion
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Refuses a node certificate for the API's name: nodes get
	// certificates from the same CA for addresses they choose.
	if tr.TLSClientConfig, err = cpident.ClientConfig(opts.CAPEM, ""); err != nil {
		return nil, err
	}
	return &Client{base: u, creds: opts.Credentials, region: opts.Region, now: opts.Now, agent: opts.UserAgent,
		http: &http.Client{Transport: tr, Timeout: opts.Timeout}}, nil
}

// Header is an extra request header (If-Match, If-None-Match).
type Header struct{ Name, Value string }

// Do sends method path with in as the JSON body (nil for none) and decodes
// the response into out (nil to discard).
func (c *Client) Do(ctx context.Context, method, path string, in, out any, headers ...Header) error {
	var body []byte
	if raw, ok := in.(RawBody); ok {
		body = raw
	} else if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	u := *c.base
	p, q, _ := strings.Cut(path, "?")
	u.Path += p
	u.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.agent != "" {
		req.Header.Set("User-Agent", c.agent)
	}
	for _, h := range headers {
		req.Header.Set(h.Name, h.Value)
	}
	if err := sigv4.SignRequest(ctx, req, body, c.creds, c.region, c.now()); err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	limit := int64(16 << 20)
	raw, isRaw := out.(*RawResponse)
	if isRaw {
		limit = 1 << 30
	}
	rb, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, p, err)
	}
	if int64(len(rb)) > limit {
		return fmt.Errorf("%s %s: the response is over %d bytes", method, p, limit)
	}
	if resp.StatusCode >= 300 {
		var env struct {
			Error *model.Error `json:"error"`
		}
		if json.Unmarshal(rb, &env) != nil || env.Error == nil {
			return &model.Error{Status: resp.StatusCode, Code: "HTTP" + strconv.Itoa(resp.StatusCode), Message: strings.TrimSpace(string(rb))}
		}
		env.Error.Status = resp.StatusCode
		return env.Error
	}
	if isRaw {
		raw.Header, raw.Body = resp.Header, rb
		return nil
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return fmt.Errorf("%s %s: decode response: %w", method, p, err)
		}
	}
	return nil
}

// RawBody is a request body sent byte for byte, valid JSON or not.
type RawBody []byte

// RawResponse, passed to Do as out, receives a successful response as it
// is (up to 1 GiB), with its headers: for GET /v1/backup.
type RawResponse struct {
	Header http.Header
	Body   []byte
}

// IfMatch returns an If-Match header for an object revision.
func IfMatch(rev uint64) Header { return Header{"If-Match", strconv.FormatUint(rev, 10)} }

// WaitRollout waits up to wait until every connected node of zones (all
// when empty) serves revision rev.
func (c *Client) WaitRollout(ctx context.Context, rev uint64, zones []string, wait time.Duration) (*model.Rollout, error) {
	q := url.Values{}
	q.Set("revision", strconv.FormatUint(rev, 10))
	q.Set("wait", wait.String())
	if len(zones) > 0 {
		q.Set("zones", strings.Join(zones, ","))
	}
	var out model.Rollout
	if err := c.Do(ctx, http.MethodGet, "/v1/rollout?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReceiveConfigPolicy returns a policy document that allows
// dbproxy:ReceiveConfig on the given zones only: what the IAM user of a
// zone's nodes needs.
func ReceiveConfigPolicy(zones ...string) string {
	res := make([]string, 0, len(zones))
	for _, z := range zones {
		res = append(res, "zone/"+z)
	}
	doc, _ := json.Marshal(map[string]any{
		"Version":   "2012-10-17",
		"Statement": []map[string]any{{"Effect": "Allow", "Action": "dbproxy:ReceiveConfig", "Resource": res}},
	})
	return string(doc)
}

// CreateUser creates (or keeps) the IAM user name and a policy of the same
// name holding doc, attaches it to the user, and returns a new access key
// of the user (its secret is shown only this once).
func (c *Client) CreateUser(ctx context.Context, name, doc string) (sigv4.Credentials, error) {
	steps := []struct {
		method, path string
		body         any
	}{
		{"PUT", "/v1/iam/users/" + name, map[string]any{}},
		{"PUT", "/v1/iam/policies/" + name, map[string]string{"policy": doc}},
		{"PUT", "/v1/iam/users/" + name + "/policies/" + name, map[string]any{}},
	}
	for _, s := range steps {
		if err := c.Do(ctx, s.method, s.path, s.body, nil); err != nil {
			return sigv4.Credentials{}, err
		}
	}
	var key struct {
		ID     string `json:"access_key_id"`
		Secret string `json:"secret_access_key"`
	}
	if err := c.Do(ctx, "POST", "/v1/iam/users/"+name+"/access-keys", nil, &key); err != nil {
		return sigv4.Credentials{}, err
	}
	return sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret}, nil
}
