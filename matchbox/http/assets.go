package http

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	nethttp "net/http"
	"os"
	"path"
	"strings"
	"syscall"

	"matchbox.dev/matchbox"
)

// assets serves static files from AssetsPath with Range and conditional
// requests. Paths are confined to the root, symlinks included (os.Root);
// directories are never listed.
func (s *Server) assets() nethttp.Handler { return s.files(s.cfg.AssetsPath, "/assets/", nil) }

// files serves the folder root under the URL prefix (see assets); pinned
// names are served from their absolute paths.
func (s *Server) files(rootPath, prefix string, pinned map[string]string) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Method != nethttp.MethodGet && r.Method != nethttp.MethodHead {
			methodNotAllowed(w)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(r.URL.Path, prefix)), "/")
		// Hidden files and folders are never served: the release mirror
		// stages unverified downloads in them.
		if name == "" || strings.ContainsRune(name, 0) || strings.HasPrefix(name, ".") || strings.Contains(name, "/.") {
			nethttp.NotFound(w, r)
			return
		}
		var f *os.File
		var err error
		// O_NONBLOCK: opening a FIFO for reading otherwise waits for a
		// writer, for ever. Files that are not regular are refused
		// below, once open.
		if p, ok := pinned[name]; ok {
			f, err = os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		} else {
			root, rerr := os.OpenRoot(rootPath)
			if rerr != nil {
				s.limit.Log(r.Context(), slog.LevelError, "folder unavailable", rootPath, "path", rootPath, "err", rerr)
				nethttp.NotFound(w, r)
				return
			}
			defer root.Close()
			f, err = root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		}
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.limit.Log(r.Context(), slog.LevelInfo, "asset refused", name, "path", matchbox.Quote(name), "remote", r.RemoteAddr, "err", pathless(err))
			}
			nethttp.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			if err == nil && !fi.IsDir() {
				s.limit.Log(r.Context(), slog.LevelInfo, "asset refused", name, "path", matchbox.Quote(name), "remote", r.RemoteAddr, "err", "not a regular file: "+fi.Mode().Type().String())
			}
			nethttp.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
		nethttp.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
		// Kernel and initrd downloads carry no MAC: attribute them by the
		// address the machine used for its boot requests or DHCP lease.
		// Range requests after the first byte are not separate steps.
		if ip := remoteIP(r); ip.IsValid() && r.Method == nethttp.MethodGet && !strings.HasPrefix(r.Header.Get("Range"), "bytes=") {
			if mac, ok := s.cfg.Recorder.MACOf(ip); ok {
				s.cfg.Recorder.Record(matchbox.Event{MAC: mac, Kind: matchbox.EventAssetServed, IP: ip.String(), File: prefix + name,
					Detail: fmt.Sprintf("%d bytes", fi.Size())})
			}
		}
	})
}

// pathless is err without the path of an *fs.PathError, which repeats a
// client's name.
func pathless(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}
