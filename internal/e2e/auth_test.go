package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/internal/tlsconfig"
	"github.com/canopytree/canopy/internal/tlsconfig/tlstest"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
)

// TestReaderAuthAndTLS: a root with TLS on both listeners and a reader
// token, a supernode process that dials it and serves its own child over
// TLS (its tls section from the environment), and a leaf that finds the
// supernode itself. Tree traffic needs no token; every reader call does:
// over HTTPS a missing, malformed or wrong token is a 401 with a
// challenge and a message saying which, over gRPC Unauthenticated with
// the same message; the right token reads the leaf's data. /healthz and
// the OpenAPI document stay open; plaintext is refused on both ports.
func TestReaderAuthAndTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	const token = "s3cret-token"
	pki := tlstest.New(t)
	serverTLS, err := tlsconfig.Config{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}.Server()
	if err != nil {
		t.Fatal(err)
	}
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.TLS, o.Reader.BearerToken = serverTLS, token
		o.ChildLimit = 1 // the supernode; the leaf must go below it
	})
	startNodeProcess(t, "sn1", r.grpcAddr, filepath.Join(t.TempDir(), "sn1"),
		"CANOPY_NODE_ROLE=supernode", "CANOPY_SCRAPE_MACHINE=false",
		"CANOPY_TLS_CA_FILE="+pki.CAFile, "CANOPY_TLS_CERT_FILE="+pki.ServerCert, "CANOPY_TLS_KEY_FILE="+pki.ServerKey)
	eventually(t, 20*time.Second, "the supernode under the root over TLS", func() bool { return attached(r.Topology()) == 1 })
	l := startLeafWith(t, "leafT", "eu-1", r.grpcAddr, func(c *node.Config) {
		c.Node.Static, c.Node.Role = false, "leaf-only"
		c.TLS = tlsconfig.Config{CAFile: pki.CAFile}
	})
	eventually(t, 30*time.Second, "the leaf's data at the root through the supernode", func() bool {
		n := find(r.Topology(), "leafT")
		return n != nil && n.ParentId == "sn1" && l.node.Agent.Delivery().LowSeq > 3
	})

	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool()}}, Timeout: 10 * time.Second}
	do := func(path, authorization string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+r.httpAddr+path, nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := httpsClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, resp.Header, string(body)
	}
	for _, path := range []string{"/api/metrics-api/nodes/leafT/latest", "/api/metrics-api/dc/eu-1/0", "/api/v1/tree", "/api/v1/stream/tree.ni"} {
		for _, tc := range []struct{ authorization, msg string }{
			{"", "requires a bearer token"},
			{"Basic dXNlcjpwYXNz", "malformed authorization"},
			{"Bearer wrong", "invalid bearer token"},
		} {
			code, h, body := do(path, tc.authorization)
			if code != http.StatusUnauthorized || !strings.Contains(body, tc.msg) || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("GET %s with %q: %d %q (WWW-Authenticate %q), want 401 saying %q", path, tc.authorization, code, body, h.Get("WWW-Authenticate"), tc.msg)
			}
		}
	}
	code, _, body := do("/api/metrics-api/nodes/leafT/latest", "Bearer "+token)
	if code != 200 || !strings.Contains(body, `up{dc="eu-1",job="node_exporter",level="machine",node="leafT"} 1 `) {
		t.Fatalf("with the token: %d\n%s", code, head([]byte(body)))
	}
	for _, path := range []string{"/healthz", "/openapi.json"} {
		if code, _, _ := do(path, ""); code != 200 {
			t.Errorf("GET %s without a token: %d, want 200", path, code)
		}
	}
	if resp, err := http.Get("http://" + r.httpAddr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the HTTPS port: %d", resp.StatusCode)
		}
	}

	// gRPC: the same token in metadata.
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pki.Pool()})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := canopyv1.NewReaderServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := map[string]func(context.Context) error{
		"Latest": func(ctx context.Context) error {
			_, err := client.Latest(ctx, &canopyv1.LatestRequest{Target: &canopyv1.Target{NodeId: "leafT"}})
			return err
		},
		"Query": func(ctx context.Context) error {
			s, err := client.Query(ctx, &canopyv1.QueryRequest{Target: &canopyv1.Target{NodeId: "leafT"}, TimeRange: &canopyv1.TimeRange{Start: "0"}})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"Subscribe": func(ctx context.Context) error {
			s, err := client.Subscribe(ctx, &canopyv1.SubscribeRequest{Topic: "metrics.nodes.leafT"})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"Topology": func(ctx context.Context) error {
			_, err := client.Topology(ctx, &canopyv1.TopologyRequest{})
			return err
		},
	}
	for name, call := range calls {
		for _, tc := range []struct{ authorization, msg string }{
			{"", "requires a bearer token"},
			{"Bearer nope", "invalid bearer token"},
		} {
			cctx := ctx
			if tc.authorization != "" {
				cctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.authorization)
			}
			if st, _ := status.FromError(call(cctx)); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("%s with %q: %v, want Unauthenticated saying %q", name, tc.authorization, st, tc.msg)
			}
		}
		if err := call(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)); err != nil {
			t.Errorf("%s with the token: %v", name, err)
		}
	}
	plain, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	_, err = canopyv1.NewReaderServiceClient(plain).Latest(metadata.AppendToOutgoingContext(short, "authorization", "Bearer "+token), &canopyv1.LatestRequest{Target: &canopyv1.Target{NodeId: "leafT"}})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded {
		t.Errorf("plaintext gRPC to the TLS port: %v", err)
	}
}
