package reader

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

func TestAuthenticator(t *testing.T) {
	a := NewAuthenticator("tok")
	with := func(v string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", v))
	}
	for _, tc := range []struct {
		ctx    context.Context
		method string
		msg    string // "" = allowed
	}{
		{context.Background(), canopyv1.ReaderService_Latest_FullMethodName, "requires a bearer token"},
		{with("Bearer tok"), canopyv1.ReaderService_Latest_FullMethodName, ""},
		{with("bearer  tok "), canopyv1.ReaderService_Query_FullMethodName, ""},
		{with("Bearer to"), canopyv1.ReaderService_Subscribe_FullMethodName, "invalid bearer token"},
		{with("Bearer tokk"), canopyv1.ReaderService_Export_FullMethodName, "invalid bearer token"},
		{with("tok"), canopyv1.ReaderService_Topology_FullMethodName, "malformed authorization"},
		{with("Basic dG9rOg=="), canopyv1.ReaderService_ExportLatest_FullMethodName, "malformed authorization"},
		// The tree's own calls on the same server are not the reader's.
		{context.Background(), canopyv1.TreeService_Heartbeat_FullMethodName, ""},
		{context.Background(), canopyv1.TreeService_Join_FullMethodName, ""},
	} {
		err := a.checkContext(tc.ctx, tc.method)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.method, err)
			}
			continue
		}
		if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: %v, want Unauthenticated saying %q", tc.method, err, tc.msg)
		}
	}
	var open *Authenticator = NewAuthenticator("")
	if open != nil || open.Check("") != nil || len(open.ServerOptions()) != 0 {
		t.Error("an empty token must leave the reader open")
	}
}
