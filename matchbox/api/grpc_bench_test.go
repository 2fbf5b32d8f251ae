package api_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
	"matchbox.dev/matchbox/api/storagepb"
)

// grpcTLS is TLS for a gRPC server (127.0.0.1) and an admin client (no
// OU) of it, from a CA made for the test.
func grpcTLS(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	ca := newTestCA(tb)
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.server(tb)}, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert}
	client = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.pool, Certificates: []tls.Certificate{ca.client(tb, "terraform")}}
	return server, client
}

// BenchmarkGRPCGroupPutGet is one GroupPut and one GroupGet over gRPC on
// loopback TLS, with 10,000 groups in the database: the write, its commit,
// the catalog reload the boot endpoints then serve from, and the read.
// "parallel" runs 10 clients at once (terraform's default parallelism),
// whose reloads are shared.
func BenchmarkGRPCGroupPutGet(b *testing.B) {
	srv, _ := groupsAPI(b, 10_000)
	ctx := context.Background()
	serverTLS, clientTLS := grpcTLS(b)
	gs := grpc.NewServer(append(srv.GRPCOptions(nil, nil), grpc.Creds(credentials.NewTLS(serverTLS)))...)
	srv.RegisterGRPC(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	groups := rpcpb.NewGroupsClient(conn)
	var n atomic.Int64
	putGet := func(b *testing.B) {
		i := n.Add(1)
		k := i % 10_000
		id := fmt.Sprintf("g%d", k)
		g := &storagepb.Group{Id: id, Profile: "p", Selector: map[string]string{"mac": fmt.Sprintf("52:54:00:00:%02x:%02x", byte(k>>8), byte(k))},
			Metadata: []byte(fmt.Sprintf(`{"hostname": "node%d", "n": %d}`, k, i))}
		if _, err := groups.GroupPut(ctx, &pb.GroupPutRequest{Group: g}); err != nil {
			b.Fatal(err)
		}
		r, err := groups.GroupGet(ctx, &pb.GroupGetRequest{Id: id})
		if err != nil || r.GetGroup().GetId() != id {
			b.Fatal(r, err)
		}
	}
	b.Run("get", func(b *testing.B) {
		for b.Loop() {
			if _, err := groups.GroupGet(ctx, &pb.GroupGetRequest{Id: "g1"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			putGet(b)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(5) // 10 clients on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				putGet(b)
			}
		})
	})
}
