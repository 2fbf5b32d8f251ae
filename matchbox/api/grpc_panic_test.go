package api_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
)

// A gRPC call that panics fails with Internal and the server goes on.
func TestGRPCPanicFailsTheCallAlone(t *testing.T) {
	srv, _ := groupsAPI(t, 1)
	serverTLS, clientTLS := grpcTLS(t)
	var mu sync.Mutex
	var codesSeen []codes.Code
	observe := func(_ string, c codes.Code) { mu.Lock(); codesSeen = append(codesSeen, c); mu.Unlock() }
	gs := grpc.NewServer(append(srv.GRPCOptions(observe, nil), grpc.Creds(credentials.NewTLS(serverTLS)))...)
	srv.RegisterGRPC(gs)
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Panics",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Boom", Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Panics/Boom"}, func(context.Context, any) (any, error) { panic("boom") })
		}}},
	}, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := context.Background()
	err = conn.Invoke(ctx, "/test.Panics/Boom", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Internal {
		t.Errorf("a call that panics: %v, want Internal", err)
	}
	if r, err := rpcpb.NewGroupsClient(conn).GroupList(ctx, &pb.GroupListRequest{}); err != nil || len(r.GetGroups()) != 1 {
		t.Errorf("after the panic: %v %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(codesSeen) != 2 || codesSeen[0] != codes.Internal || codesSeen[1] != codes.OK {
		t.Errorf("observed codes %v", codesSeen)
	}
}
