package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
	"matchbox.dev/matchbox/api/storagepb"
)

// grpcTLS makes a CA, and TLS settings for a server (127.0.0.1) and an
// admin client (no OU) of it.
func grpcTLS(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	issue := func(serial int64, server bool) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprint("c", serial)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{issue(2, true)}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	client = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{issue(3, false)}}
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
