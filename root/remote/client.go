package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/canopytree/canopy/internal/tlsconfig"
)

// UserAgent identifies canopy to sinks.
const UserAgent = "canopy-root/0.1"

// Auth is basic auth or a bearer token (at most one).
type Auth struct {
	Username, Password string
	BearerToken        string
}

// ClientConfig is what a Client needs to reach one endpoint.
type ClientConfig struct {
	URL     string
	Timeout time.Duration
	Auth    Auth
	TLS     tlsconfig.Config
	Headers map[string]string
}

// Client posts remote write 1.0 requests to one endpoint.
type Client struct {
	cfg  ClientConfig
	http *http.Client
}

// NewClient builds a client; TLS files are read now, so a bad path is an
// error at startup.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Auth.BearerToken != "" && cfg.Auth.Username != "" {
		return nil, errors.New("basic auth and bearer token are exclusive")
	}
	tc, err := cfg.TLS.Client()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = 64 // one per shard
	return &Client{cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// SendError is a failed send: Recoverable ones (network errors, 5xx,
// 429) are retried, the others dropped.
type SendError struct {
	Status      int // 0 for a network error
	Recoverable bool
	RetryAfter  time.Duration // from a 429 or 503 answer
	Err         error
}

func (e *SendError) Error() string {
	if e.Status == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("HTTP %d: %v", e.Status, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// Reason is the label a failure is counted under.
func (e *SendError) Reason() string {
	if e.Status == 0 {
		return "network"
	}
	return strconv.Itoa(e.Status)
}

// Send posts one snappy-compressed WriteRequest.
func (c *Client) Send(ctx context.Context, body []byte, now time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return &SendError{Err: err}
	}
	for k, v := range c.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	switch {
	case c.cfg.Auth.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+c.cfg.Auth.BearerToken)
	case c.cfg.Auth.Username != "":
		req.SetBasicAuth(c.cfg.Auth.Username, c.cfg.Auth.Password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &SendError{Recoverable: ctx.Err() == nil, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	e := &SendError{Status: resp.StatusCode, Err: fmt.Errorf("%s", bytes.TrimSpace(msg))}
	if resp.StatusCode/100 == 5 || resp.StatusCode == http.StatusTooManyRequests {
		e.Recoverable = true
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
	}
	return e
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
