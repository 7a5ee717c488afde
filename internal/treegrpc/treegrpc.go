// Package treegrpc is the tree protocol's gRPC transport for a node's own
// requests: a pool of connections to parents and candidates, and the
// mapping between the core's messages and TreeService calls.
package treegrpc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	_ "github.com/canopytree/canopy/internal/grpcsnappy" // heartbeats are snappy-compressed
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/tree"
)

// Conns pools client connections by address. Connections are cheap to
// keep (one per parent and a few candidates) and are closed with the pool.
type Conns struct {
	window  time.Duration
	maxSend int
	creds   credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewConns dials with a reconnect backoff bounded by the window, so a
// parent that comes back sees its children within a few windows (gRPC's
// default grows to two minutes). creds secure every connection (nil:
// plaintext); a tree uses TLS on every link or on none.
func NewConns(window time.Duration, maxSend int, creds credentials.TransportCredentials) *Conns {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return &Conns{window: window, maxSend: maxSend, creds: creds, conns: map[string]*grpc.ClientConn{}}
}

// Get returns the connection to addr, dialling lazily.
func (c *Conns) Get(addr string) *grpc.ClientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return conn
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(c.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(c.maxSend)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: c.window / 4, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * c.window},
			MinConnectTimeout: c.window,
		}))
	if err != nil {
		// NewClient only fails on a malformed target; calls on the
		// placeholder fail and the tree moves on.
		conn, _ = grpc.NewClient("passthrough:///invalid", grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	c.conns[addr] = conn
	return conn
}

// Dummy is a connection nothing listens on: the uplink's target before the
// node has a parent.
func (c *Conns) Dummy() *grpc.ClientConn { return c.Get("passthrough:///unattached") }

// Close closes every connection.
func (c *Conns) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, conn := range c.conns {
		conn.Close()
		delete(c.conns, addr)
	}
}

// Call sends one of the core's requests (not heartbeats: those carry data
// and go through the agent).
func (c *Conns) Call(ctx context.Context, addr string, msg proto.Message) (proto.Message, error) {
	client := canopyv1.NewTreeServiceClient(c.Get(addr))
	switch req := msg.(type) {
	case *canopyv1.CandidatesRequest:
		return client.Candidates(ctx, req)
	case *canopyv1.PingRequest:
		return client.Ping(ctx, req)
	case *canopyv1.JoinRequest:
		return client.Join(ctx, req)
	case *canopyv1.LeaveRequest:
		return client.Leave(ctx, req)
	}
	return nil, fmt.Errorf("treegrpc: cannot send %T", msg)
}

// Error maps a call's error for the core: a parent that does not know us
// answers NotFound.
func Error(err error) error {
	if err != nil && status.Code(err) == codes.NotFound {
		return tree.ErrNotChild
	}
	return err
}

// Message unwraps a typed response for the core (nil stays nil).
func Message(resp any) proto.Message {
	switch r := resp.(type) {
	case nil:
		return nil
	case *canopyv1.HeartbeatResponse:
		if r == nil {
			return nil
		}
		return r
	case proto.Message:
		return r
	}
	return nil
}
