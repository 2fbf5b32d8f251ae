package http

import (
	"errors"
	"fmt"
	"io/fs"
	nethttp "net/http"
	"os"
	"path"
	"strings"
)

// assets serves static files from AssetsPath with Range and conditional
// requests. Paths are confined to the root, symlinks included (os.Root);
// directories are never listed.
func (s *Server) assets() nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Method != nethttp.MethodGet && r.Method != nethttp.MethodHead {
			methodNotAllowed(w)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(r.URL.Path, "/assets/")), "/")
		if name == "" || strings.ContainsRune(name, 0) {
			nethttp.NotFound(w, r)
			return
		}
		root, err := os.OpenRoot(s.cfg.AssetsPath)
		if err != nil {
			s.log.Error("assets folder unavailable", "path", s.cfg.AssetsPath, "err", err)
			nethttp.NotFound(w, r)
			return
		}
		defer root.Close()
		f, err := root.Open(name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Info("asset refused", "path", name, "remote", r.RemoteAddr, "err", err)
			}
			nethttp.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			nethttp.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
		nethttp.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
	})
}
