// Package tftp is matchbox's read-only TFTP front-end, on
// github.com/pin/tftp/v3: it serves the iPXE binaries from a directory
// (Debian's ipxe package puts them in /usr/lib/ipxe) and generated files,
// with paths cleaned and confined to the root, blksize and tsize
// negotiation, a cap on concurrent transfers, and every transfer logged,
// counted and recorded as a machine event.
package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
)

// Generator produces a generated file for a client that reached the
// server at localIP.
type Generator func(localIP netip.Addr) []byte

// Config configures a Server.
type Config struct {
	// Root is the directory files are served from.
	Root string
	// Generated files, by name, served before looking in Root.
	Generated map[string]Generator
	// Pinned files, by name: absolute paths served for these names even
	// though they are outside Root. Debian's ipxe package links
	// /usr/lib/ipxe/ipxe.efi to /boot/ipxe.efi; the configured boot files
	// are pinned so that such links work while every other name stays
	// confined to Root.
	Pinned map[string]string
	// MaxTransfers caps concurrent transfers (default 128); a request
	// beyond it waits up to Timeout for a slot, then is refused as busy.
	MaxTransfers int
	// CacheBytes bounds the memory holding the content of recently served
	// files (default 64 MiB; negative: no cache). Files larger than a
	// quarter of it are always read from disk.
	CacheBytes int64
	// Timeout is the per-packet timeout (default 3s), Retries how often a
	// packet is resent (default 5).
	Timeout  time.Duration
	Retries  int
	Recorder *matchbox.Recorder
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Server serves files over TFTP.
type Server struct {
	cfg       Config
	log       *slog.Logger
	slots     chan struct{}
	cache     *fileCache
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 128
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.Recorder == nil {
		cfg.Recorder = matchbox.NewRecorder(nil, nil)
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		slots: make(chan struct{}, cfg.MaxTransfers),
		cache: newFileCache(cfg.CacheBytes),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_tftp_transfers_total", Help: "TFTP read requests by result (sent, size-probe, not-found, refused, busy, failed).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "matchbox_tftp_bytes_total", Help: "Bytes sent over TFTP.",
		}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.transfers, s.bytes)
	}
	return s
}

// Serve answers read requests on conn until ctx ends.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv := tftp.NewServer(s.read, nil)
	srv.SetTimeout(s.cfg.Timeout)
	srv.SetRetries(s.cfg.Retries)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.Shutdown()
		case <-done:
		}
	}()
	err := srv.Serve(conn)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	return nil
}

// errAccess is the refusal of a path that is not allowed.
var errAccess = errors.New("access violation")

// PinBootFiles returns, for the given file names, those that are symlinks
// in root leading outside it, with the absolute path they lead to.
func PinBootFiles(root string, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		clean, err := CleanPath(n)
		if err != nil {
			continue
		}
		p := filepath.Join(root, filepath.FromSlash(clean))
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		absRoot, err := filepath.EvalSymlinks(root)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(absRoot, target); err == nil && !strings.HasPrefix(rel, "..") {
			continue // inside the root: no pin needed
		}
		out[clean] = target
	}
	return out
}

// CleanPath turns a requested file name into a path inside the root, or
// refuses it. A leading "/" means the root (as tftpd-hpa -s does); "..",
// NUL and other control characters, and backslashes are refused.
func CleanPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty file name", errAccess)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "", fmt.Errorf("%w: invalid character in file name", errAccess)
		}
	}
	rel := strings.TrimLeft(name, "/")
	for _, part := range strings.Split(rel, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q leaves the root", errAccess, name)
		}
	}
	clean := path.Clean(rel)
	if clean == "." || clean == "" {
		return "", fmt.Errorf("%w: %q is not a file", errAccess, name)
	}
	return clean, nil
}

// read is the read-request handler.
func (s *Server) read(filename string, rf io.ReaderFrom) error {
	start := time.Now()
	var remote netip.Addr
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		remote, _ = netip.AddrFromSlice(ra.IP.To4())
	}
	var local netip.Addr
	if pi, ok := rf.(tftp.RequestPacketInfo); ok {
		local, _ = netip.AddrFromSlice(pi.LocalIP().To4())
	}
	mac, _ := s.cfg.Recorder.MACOf(remote)
	fail := func(result string, err error) error {
		s.transfers.WithLabelValues(result).Inc()
		s.log.Info("tftp: refused", "remote", remote, "mac", mac, "file", filename, "result", result, "err", err)
		if mac != "" {
			s.cfg.Recorder.Record(matchbox.Event{MAC: mac, Kind: matchbox.EventTFTPFailed, IP: remote.String(), File: filename, Detail: err.Error()})
		}
		return err
	}

	// Queue briefly for a slot rather than refuse at once: firmware does
	// not always retry a refused transfer.
	wait := time.NewTimer(s.cfg.Timeout)
	select {
	case s.slots <- struct{}{}:
		wait.Stop()
		defer func() { <-s.slots }()
	case <-wait.C:
		return fail("busy", errors.New("server busy: too many transfers, retry later"))
	}

	name, err := CleanPath(filename)
	if err != nil {
		return fail("refused", err)
	}
	var src io.Reader
	var size int64
	if gen, ok := s.cfg.Generated[name]; ok {
		body := gen(local)
		src, size = bytes.NewReader(body), int64(len(body))
	} else {
		f, fi, err := s.open(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fail("not-found", fmt.Errorf("file not found: %s", name))
			}
			return fail("refused", err)
		}
		defer f.Close()
		src, size = f, fi.Size()
		if data, ok := s.cache.content(name, f, fi); ok {
			src = bytes.NewReader(data)
		} else if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail("failed", err)
		}
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(size)
	}
	n, err := rf.ReadFrom(src)
	s.bytes.Add(float64(n))
	if err != nil && strings.Contains(err.Error(), "code=8") {
		// The client stopped after option negotiation (error 8): UEFI PXE
		// asks for the size first, then requests the file again.
		s.transfers.WithLabelValues("size-probe").Inc()
		s.log.Debug("tftp: client took the size and stopped", "remote", remote, "file", name)
		return nil
	}
	if err != nil {
		s.transfers.WithLabelValues("failed").Inc()
		s.log.Info("tftp: transfer failed", "remote", remote, "mac", mac, "file", name, "bytes", n, "err", err)
		if mac != "" {
			s.cfg.Recorder.Record(matchbox.Event{MAC: mac, Kind: matchbox.EventTFTPFailed, IP: remote.String(), File: name, Detail: err.Error()})
		}
		return err
	}
	s.transfers.WithLabelValues("sent").Inc()
	s.log.Info("tftp: sent", "remote", remote, "mac", mac, "file", name, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	if mac != "" {
		s.cfg.Recorder.Record(matchbox.Event{MAC: mac, Kind: matchbox.EventTFTPSent, IP: remote.String(), File: name,
			Detail: fmt.Sprintf("%d bytes", n)})
	}
	return nil
}

// open opens name inside the root (or its pinned path); symlinks leading
// outside the root are refused.
func (s *Server) open(name string) (*os.File, fs.FileInfo, error) {
	if p, ok := s.cfg.Pinned[name]; ok {
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, err
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, nil, fmt.Errorf("%w: %s is not a regular file", errAccess, name)
		}
		return f, fi, nil
	}
	root, err := os.OpenRoot(s.cfg.Root)
	if err != nil {
		return nil, nil, fmt.Errorf("tftp root: %w", err)
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w: %s", errAccess, name)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s is not a regular file", errAccess, name)
	}
	return f, fi, nil
}
