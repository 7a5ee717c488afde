package reader

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// readerMethods prefixes the full method names of ReaderService; other
// services on the same server (the tree's) are not the reader's to guard.
var readerMethods = "/" + canopyv1.ReaderService_ServiceDesc.ServiceName + "/"

// Authenticator checks the bearer token of reader calls: gRPC metadata
// "authorization: Bearer <token>", or the HTTP Authorization header, which
// the gateway also passes on as that metadata.
type Authenticator struct {
	token []byte
}

// NewAuthenticator guards the reader with token; an empty token lets every
// call through (the reader is open).
func NewAuthenticator(token string) *Authenticator {
	if token == "" {
		return nil
	}
	return &Authenticator{token: []byte(token)}
}

// Check returns an Unauthenticated status naming what is wrong with the
// value of an authorization header, or nil when it carries the token.
func (a *Authenticator) Check(authorization string) error {
	if a == nil {
		return nil
	}
	if authorization == "" {
		return status.Error(codes.Unauthenticated, `the reader requires a bearer token: send "Authorization: Bearer <token>"`)
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return status.Error(codes.Unauthenticated, `malformed authorization: expected "Bearer <token>"`)
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), a.token) != 1 {
		return status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	return nil
}

func (a *Authenticator) checkContext(ctx context.Context, method string) error {
	if a == nil || !strings.HasPrefix(method, readerMethods) {
		return nil
	}
	var authorization string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authorization = v[0]
		}
	}
	return a.Check(authorization)
}

// ServerOptions are the interceptors that guard ReaderService on a gRPC
// server; none when the reader is open.
func (a *Authenticator) ServerOptions() []grpc.ServerOption {
	if a == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			if err := a.checkContext(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return next(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			if err := a.checkContext(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return next(srv, ss)
		}),
	}
}
