// Command grpcload measures group writes through the admin APIs of a
// matchbox binary started as the README starts it, plus the gRPC API
// (-rpc-address with a CA, server and client certificates made for the
// run): it creates N groups with C concurrent clients, each Put followed
// at once by the machine's /ipxe, which must already serve the new group
// (a 404 or another answer is counted as an error). The same run through
// the REST API (PUT /api/v1/groups/ID) is the reference.
//
//	go build -o /tmp/matchbox ./cmd/matchbox
//	go run ./tools/grpcload -matchbox /tmp/matchbox -groups 10000 -concurrency 10,1
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
	"matchbox.dev/matchbox/api/storagepb"
)

func main() {
	bin := flag.String("matchbox", "", "matchbox binary to run (required)")
	n := flag.Int("groups", 10_000, "groups to create per run")
	concs := flag.String("concurrency", "10,1", "comma-separated client counts (terraform's default -parallelism is 10)")
	modes := flag.String("modes", "grpc,rest", "APIs to write through: grpc, rest")
	extra := flag.String("server-flags", "", `flags added to the server's command line, space-separated (default: none)`)
	flag.Parse()
	serverFlags = strings.Fields(*extra)
	if *bin == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "grpcload: -matchbox is required and -groups must be at least 1")
		os.Exit(2)
	}
	fmt.Printf("%-5s %5s %8s %9s %9s %9s %9s %9s %7s\n", "api", "conc", "groups", "total", "groups/s", "put p50", "put p99", "+ipxe p99", "errors")
	for _, c := range strings.Split(*concs, ",") {
		conc, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || conc < 1 {
			fmt.Fprintf(os.Stderr, "grpcload: bad concurrency %q\n", c)
			os.Exit(2)
		}
		for _, mode := range strings.Split(*modes, ",") {
			if mode != "grpc" && mode != "rest" {
				fmt.Fprintf(os.Stderr, "grpcload: -modes: %q is not grpc or rest\n", mode)
				os.Exit(2)
			}
			if err := run(*bin, mode, *n, conc); err != nil {
				fmt.Fprintln(os.Stderr, "grpcload:", err)
				os.Exit(1)
			}
		}
	}
}

// serverFlags are added to the server's command line (-server-flags).
var serverFlags []string

func mac(i int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

const kernel = "/assets/flatcar/stable/amd64-usr/current/flatcar_production_pxe.vmlinuz"

const butane = `variant: flatcar
version: 1.1.0
storage:
  files:
    - path: /etc/hostname
      contents:
        inline: {{.hostname}}
`

// run starts a fresh server and creates n groups through mode's API with
// conc clients.
func run(bin, mode string, n, conc int) error {
	dir, err := os.MkdirTemp("", "grpcload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	tlsCfg, files, err := makeCerts(dir)
	if err != nil {
		return err
	}
	addr, apiAddr, rpcAddr := freePort(), freePort(), freePort()
	// The README's command (data in the data dir, the admin API on), and
	// the gRPC API.
	cmd := exec.Command(bin, append([]string{"serve", "-address", addr, "-data-path", data, "-assets-path", "", "-api-address", apiAddr,
		"-rpc-address", rpcAddr, "-cert-file", files.cert, "-key-file", files.key, "-ca-file", files.ca}, serverFlags...)...)
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	boot := "http://" + addr
	if err := waitReady(boot); err != nil {
		return err
	}
	token, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(rpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := context.Background()
	profiles, ign, groups := rpcpb.NewProfilesClient(conn), rpcpb.NewIgnitionClient(conn), rpcpb.NewGroupsClient(conn)
	if _, err := profiles.ProfilePut(ctx, &pb.ProfilePutRequest{Profile: &storagepb.Profile{Id: "node", IgnitionId: "node.yaml",
		Boot: &storagepb.NetBoot{Kernel: kernel, Args: []string{"flatcar.first_boot=yes"}}}}); err != nil {
		return err
	}
	if _, err := ign.IgnitionPut(ctx, &pb.IgnitionPutRequest{Name: "node.yaml", Config: []byte(butane)}); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	defer client.CloseIdleConnections()
	put := func(i int) error {
		meta := fmt.Sprintf(`{"hostname": "node%d", "rack": "r%d"}`, i, i%40)
		if mode == "grpc" {
			_, err := groups.GroupPut(ctx, &pb.GroupPutRequest{Group: &storagepb.Group{Id: fmt.Sprintf("node%d", i), Profile: "node",
				Selector: map[string]string{"mac": mac(i)}, Metadata: []byte(meta)}})
			return err
		}
		body := fmt.Sprintf(`{"profile": "node", "selector": {"mac": %q}, "metadata": %s}`, mac(i), meta)
		req, _ := http.NewRequest("PUT", fmt.Sprintf("http://%s/api/v1/groups/node%d", apiAddr, i), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("PUT: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	served := func(i int) error {
		resp, err := client.Get(boot + "/ipxe?mac=" + mac(i))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte(kernel)) {
			return fmt.Errorf("/ipxe right after the Put: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	var next, errs atomic.Int64
	putLat, allLat := make([][]time.Duration, conc), make([][]time.Duration, conc)
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := put(i)
				t1 := time.Now()
				if err == nil {
					err = served(i)
				}
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				putLat[w] = append(putLat[w], t1.Sub(t0))
				allLat[w] = append(allLat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	p, a := slices.Concat(putLat...), slices.Concat(allLat...)
	slices.Sort(p)
	slices.Sort(a)
	fmt.Printf("%-5s %5d %8d %9s %9.0f %9s %9s %9s %7d\n", mode, conc, n, total.Round(time.Millisecond), float64(n)/total.Seconds(),
		pct(p, 50), pct(p, 99), pct(a, 99), errs.Load())
	if firstErr != nil {
		fmt.Printf("      first error: %v\n", firstErr)
	}
	// The groups are all there, through the gRPC API.
	r, err := groups.GroupList(ctx, &pb.GroupListRequest{})
	if err != nil {
		return err
	}
	if len(r.GetGroups()) != n {
		return fmt.Errorf("GroupList: %d groups, want %d", len(r.GetGroups()), n)
	}
	return nil
}

func pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "-"
	}
	return d[(len(d)-1)*p/100].Round(10 * time.Microsecond).String()
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("server not ready within 60s")
}

type certFiles struct{ ca, cert, key string }

// makeCerts makes a CA, a server certificate for 127.0.0.1 and a client
// certificate (no OU: admin), and returns the client's TLS settings (as
// terraform-provider-matchbox makes them).
func makeCerts(dir string) (*tls.Config, certFiles, error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "grpcload CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, certFiles{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, server bool) ([]byte, []byte, error) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kd, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), nil
	}
	srvCert, srvKey, err := issue(2, "server", true)
	if err != nil {
		return nil, certFiles{}, err
	}
	cliCert, cliKey, err := issue(3, "grpcload", false)
	if err != nil {
		return nil, certFiles{}, err
	}
	f := certFiles{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key")}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for path, b := range map[string][]byte{f.ca: caPEM, f.cert: srvCert, f.key: srvKey} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, certFiles{}, err
		}
	}
	kp, err := tls.X509KeyPair(cliCert, cliKey)
	if err != nil {
		return nil, certFiles{}, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{kp}}, f, nil
}
