package release

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
)

const image = "flatcar_production_image.bin.bz2"

// newEntity generates an OpenPGP key made at the given time (now when
// zero). Ed25519 keeps the tests fast.
func newEntity(t testing.TB, at time.Time) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA}
	if !at.IsZero() {
		cfg.Time = func() time.Time { return at }
	}
	e, err := openpgp.NewEntity("Flatcar Test Builds", "", "test@example.invalid", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// armoredPublic returns an entity's armored public key ring.
func armoredPublic(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func detachSign(t testing.TB, e *openpgp.Entity, data io.Reader, armored bool, cfg *packet.Config) []byte {
	t.Helper()
	var buf bytes.Buffer
	sign := openpgp.DetachSign
	if armored {
		sign = openpgp.ArmoredDetachSign
	}
	if err := sign(&buf, e, data, cfg); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// releaseContent makes the files of a small fake release, deterministic
// per version.
func releaseContent(version string) map[string][]byte {
	files := map[string][]byte{
		"version.txt": fmt.Appendf(nil, "FLATCAR_BUILD=%[2]s\nFLATCAR_VERSION=%[1]s\nFLATCAR_VERSION_ID=%[1]s\nFLATCAR_BUILD_ID=\"2024-11-01-0001\"\n",
			version, strings.Split(version, ".")[0]),
	}
	for name, size := range map[string]int{
		"flatcar_production_pxe.vmlinuz":       20_000,
		"flatcar_production_pxe_image.cpio.gz": 70_000,
		image:                                  300_000,
	} {
		seed := sha256.Sum256([]byte(version + "/" + name))
		data := make([]byte, size)
		rand.NewChaCha8(seed).Read(data)
		files[name] = data
	}
	return files
}

type fakeRequest struct{ Path, Range string }

// fakeServer serves a fake release tree with the real layout, Range
// requests included; hook may answer a request instead.
type fakeServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hook  func(w http.ResponseWriter, r *http.Request) bool
	reqs  []fakeRequest
}

func newFakeServer(t testing.TB) *fakeServer {
	s := &fakeServer{files: map[string][]byte{}}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, fakeRequest{r.URL.Path, r.Header.Get("Range")})
	hook := s.hook
	data, ok := s.files[r.URL.Path]
	s.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, path.Base(r.URL.Path), time.Time{}, bytes.NewReader(data))
}

func (s *fakeServer) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

func (s *fakeServer) set(path string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = data
}

// requests returns the requests for paths ending in suffix.
func (s *fakeServer) requests(suffix string) []fakeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fakeRequest
	for _, r := range s.reqs {
		if strings.HasSuffix(r.Path, suffix) {
			out = append(out, r)
		}
	}
	return out
}

// publish puts a release signed by signer on the server (and under
// current/ too when current) and returns its files. version.txt gets an
// ASCII-armored signature, the others binary ones, as both occur.
func (s *fakeServer) publish(t testing.TB, signer *openpgp.Entity, cfg *packet.Config, board, version string, current bool) map[string][]byte {
	t.Helper()
	files := releaseContent(version)
	dirs := []string{version}
	if current {
		dirs = append(dirs, "current")
	}
	for name, data := range files {
		sig := detachSign(t, signer, bytes.NewReader(data), name == "version.txt", cfg)
		for _, d := range dirs {
			s.set("/"+board+"/"+d+"/"+name, data)
			s.set("/"+board+"/"+d+"/"+name+".sig", sig)
		}
	}
	return files
}

func newMirror(t testing.TB, srv *fakeServer, key []byte) (*Mirror, string) {
	t.Helper()
	return mirrorIn(t, t.TempDir(), Config{Key: key, BaseURL: srv.URL})
}

// mirrorIn opens a mirror of cfg over the assets folder, logging to the
// test, and returns it and its stable/amd64-usr directory.
func mirrorIn(t testing.TB, assets string, cfg Config) (*Mirror, string) {
	t.Helper()
	cfg.AssetsPath = assets
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, filepath.Join(assets, "flatcar", "stable", "amd64-usr")
}

// servedEntries lists the names under dir the HTTP server would serve
// (not dot-prefixed), with the files of each version directory.
func servedEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, e.Name())
		if e.IsDir() {
			files, err := os.ReadDir(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				out = append(out, e.Name()+"/"+f.Name())
			}
		}
	}
	return out
}

// releaseEntries is what servedEntries shows for complete releases.
func releaseEntries(current bool, versions ...string) []string {
	var out []string
	for _, v := range versions {
		out = append(out, v)
		for _, f := range []string{
			"flatcar_production_image.bin.bz2", "flatcar_production_image.bin.bz2.sig",
			"flatcar_production_pxe.vmlinuz", "flatcar_production_pxe.vmlinuz.sig",
			"flatcar_production_pxe_image.cpio.gz", "flatcar_production_pxe_image.cpio.gz.sig",
			"version.txt", "version.txt.sig",
		} {
			out = append(out, v+"/"+f)
		}
	}
	if current {
		out = append(out, "current")
	}
	slices.Sort(out)
	return out
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	target, err := os.Readlink(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return target
}

func TestPullCurrent(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	files := srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
	srv.publish(t, key, nil, "arm64-usr", "4081.2.0", true)
	m, dir := newMirror(t, srv, armoredPublic(t, key))

	var last = map[string]Progress{}
	r, err := m.Pull(t.Context(), Request{Channel: "stable"}, func(p Progress) { last[p.File] = p })
	if err != nil {
		t.Fatal(err)
	}
	want := Release{Channel: "stable", Board: "amd64-usr", Version: "4081.2.0", Current: true}
	for _, name := range releaseFiles {
		want.Files = append(want.Files, File{name, int64(len(files[name]))})
	}
	if diff := cmp.Diff(want, r, cmpopts.IgnoreFields(Release{}, "Pulled")); diff != "" {
		t.Errorf("Pull (-want +got):\n%s", diff)
	}
	// Pulled is when the release was placed: its directory's mtime.
	st, err := os.Stat(filepath.Join(dir, "4081.2.0"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Pulled.Equal(st.ModTime()) {
		t.Errorf("Pulled = %v, want the version directory's mtime %v", r.Pulled, st.ModTime())
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dir, "4081.2.0", name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: content differs from the server's (err %v)", name, err)
		}
		sig, err := os.ReadFile(filepath.Join(dir, "4081.2.0", name+".sig"))
		if err != nil || !bytes.Equal(sig, srv.files["/amd64-usr/4081.2.0/"+name+".sig"]) {
			t.Errorf("%s.sig: content differs from the server's (err %v)", name, err)
		}
		if p := last[name]; p.Done != int64(len(data)) || p.Total != int64(len(data)) || p.Resumed != 0 {
			t.Errorf("last progress of %s = %+v; want done = total = %d", name, p, len(data))
		}
	}
	if got := readlink(t, filepath.Join(dir, "current")); got != "4081.2.0" {
		t.Errorf("current -> %q; want 4081.2.0 (relative)", got)
	}
	// Staging and lock files are gone.
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"4081.2.0", "current"}, names); diff != "" {
		t.Errorf("board dir (-want +got):\n%s", diff)
	}

	if _, err := m.Pull(t.Context(), Request{Channel: "stable", Arch: "arm64", Version: "4081.2.0"}, nil); err != nil {
		t.Fatal(err)
	}
	list, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	arm := want
	arm.Board = "arm64-usr"
	if diff := cmp.Diff([]Release{want, arm}, list, cmpopts.IgnoreFields(Release{}, "Pulled")); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		channel, board, version string
		want                    string
		err                     error
	}{
		{"stable", "amd64-usr", "current", "4081.2.0", nil},
		{"stable", "amd64-usr", "", "4081.2.0", nil},
		{"stable", "amd64-usr", "4081.2.0", "4081.2.0", nil},
		{"stable", "amd64-usr", "4081.3.0", "", matchbox.ErrNotFound},
		{"beta", "amd64-usr", "current", "", matchbox.ErrNotFound},
		{"stable", "arm64-usr", "current", "4081.2.0", nil},
	} {
		got, err := m.Resolve(tc.channel, tc.board, tc.version)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Resolve(%s, %s, %s) = %q, %v; want %q, %v", tc.channel, tc.board, tc.version, got, err, tc.want, tc.err)
		}
	}
}

func TestPullMovesCurrentOnlyForward(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	m, dir := newMirror(t, srv, armoredPublic(t, key))
	pull := func(version string) Release {
		t.Helper()
		r, err := m.Pull(t.Context(), Request{Channel: "stable", Version: version}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	current := func() string { return readlink(t, filepath.Join(dir, "current")) }

	srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
	pull("current")
	srv.publish(t, key, nil, "amd64-usr", "4152.0.0", true)
	if r := pull(""); r.Version != "4152.0.0" || !r.Current || current() != "4152.0.0" {
		t.Fatalf("after pulling the newer current: release %s current=%v, link -> %s; want 4152.0.0", r.Version, r.Current, current())
	}
	// 4081.10.0 is newer than 4081.2.0 but older than 4152.0.0.
	srv.publish(t, key, nil, "amd64-usr", "4081.10.0", false)
	if r := pull("4081.10.0"); r.Current || current() != "4152.0.0" {
		t.Fatalf("after pulling an older pinned version: current=%v, link -> %s; want 4152.0.0", r.Current, current())
	}

	// Already pulled: only current/version.txt and its signature are fetched.
	before := len(srv.requests(""))
	if r := pull("current"); r.Version != "4152.0.0" {
		t.Fatalf("pull current again = %s", r.Version)
	}
	if got := srv.requests("")[before:]; !cmp.Equal(got, []fakeRequest{
		{Path: "/amd64-usr/current/version.txt"}, {Path: "/amd64-usr/current/version.txt.sig"},
	}) {
		t.Errorf("pulling a pulled release fetched %v", got)
	}

	versions := func() []string {
		list, err := m.List()
		if err != nil {
			t.Fatal(err)
		}
		var vs []string
		for _, r := range list {
			v := r.Version
			if r.Current {
				v += "*"
			}
			vs = append(vs, v)
		}
		return vs
	}
	if diff := cmp.Diff([]string{"4152.0.0*", "4081.10.0", "4081.2.0"}, versions()); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	if err := m.Remove("stable", "amd64-usr", "4152.0.0"); err != nil {
		t.Fatal(err)
	}
	if current() != "4081.10.0" {
		t.Errorf("after removing current, link -> %s; want the newest remaining, 4081.10.0", current())
	}
	if err := m.Remove("stable", "amd64-usr", "4152.0.0"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("removing again: %v; want ErrNotFound", err)
	}

	srv.publish(t, key, nil, "amd64-usr", "4081.1.0", false)
	pull("4081.1.0")
	removed, err := m.Prune("stable", "amd64-usr", 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"4081.1.0"}, removed); diff != "" {
		t.Errorf("Prune(2) removed (-want +got):\n%s", diff)
	}
	if removed, err = m.Prune("stable", "amd64-usr", 0); err != nil || !cmp.Equal(removed, []string{"4081.2.0"}) {
		t.Errorf("Prune(0) = %v, %v; want [4081.2.0] (never current)", removed, err)
	}
	if diff := cmp.Diff([]string{"4081.10.0*"}, versions()); diff != "" {
		t.Errorf("List after prune (-want +got):\n%s", diff)
	}

	if err := m.Remove("stable", "amd64-usr", "4081.10.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resolve("stable", "amd64-usr", "current"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("Resolve current with no release left: %v; want ErrNotFound", err)
	}
	if got := servedEntries(t, dir); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
}

func TestPullTamperedFile(t *testing.T) {
	for _, name := range []string{"flatcar_production_pxe.vmlinuz", image} {
		t.Run(name, func(t *testing.T) {
			key := newEntity(t, time.Time{})
			srv := newFakeServer(t)
			m, dir := newMirror(t, srv, armoredPublic(t, key))
			srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
			if _, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil); err != nil {
				t.Fatal(err)
			}

			files := srv.publish(t, key, nil, "amd64-usr", "4152.0.0", true)
			tampered := bytes.Clone(files[name])
			tampered[len(tampered)/2] ^= 1
			srv.set("/amd64-usr/4152.0.0/"+name, tampered)

			_, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
			if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), name) {
				t.Fatalf("Pull of a tampered %s: %v; want ErrBadSignature naming the file", name, err)
			}
			t.Log(err)
			if diff := cmp.Diff(releaseEntries(true, "4081.2.0"), servedEntries(t, dir)); diff != "" {
				t.Errorf("served entries (-want +got):\n%s", diff)
			}
			if got := readlink(t, filepath.Join(dir, "current")); got != "4081.2.0" {
				t.Errorf("current -> %s; want it unchanged", got)
			}
			if _, err := os.Stat(filepath.Join(dir, ".partial-4152.0.0", name+".part")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the .part of the tampered file is still there (%v)", err)
			}
		})
	}
}

func TestPullWrongKey(t *testing.T) {
	signer, other := newEntity(t, time.Time{}), newEntity(t, time.Time{})
	srv := newFakeServer(t)
	srv.publish(t, signer, nil, "amd64-usr", "4081.2.0", true)
	m, dir := newMirror(t, srv, armoredPublic(t, other))

	for _, version := range []string{"current", "4081.2.0"} {
		_, err := m.Pull(t.Context(), Request{Channel: "stable", Version: version}, nil)
		if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "version.txt") {
			t.Errorf("Pull %s with the wrong key: %v; want ErrBadSignature naming version.txt", version, err)
		}
		t.Log(err)
	}
	if got := srv.requests(image); len(got) != 0 {
		t.Errorf("the image was requested with the wrong key: %v", got)
	}
	if got := servedEntries(t, dir); len(got) != 0 {
		t.Errorf("served entries after failed pulls: %v", got)
	}
}

func TestPullResumesTruncatedDownload(t *testing.T) {
	for _, tc := range []struct {
		name        string
		resumeHook  func(w http.ResponseWriter, r *http.Request) bool
		wantResumed bool
	}{
		{name: "server resumes with 206", wantResumed: true},
		{name: "server ignores Range", resumeHook: func(w http.ResponseWriter, r *http.Request) bool {
			r.Header.Del("Range")
			return false
		}},
		{name: "server answers 416", resumeHook: func(w http.ResponseWriter, r *http.Request) bool {
			if r.Header.Get("Range") == "" {
				return false
			}
			http.Error(w, "no", http.StatusRequestedRangeNotSatisfiable)
			return true
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := newEntity(t, time.Time{})
			srv := newFakeServer(t)
			files := srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
			m, dir := newMirror(t, srv, armoredPublic(t, key))
			data := files[image]
			half := len(data) / 2

			srv.setHook(hangUpAfter(image, data, half))
			_, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
			if err == nil || !strings.Contains(err.Error(), image) || errors.Is(err, ErrBadSignature) {
				t.Fatalf("truncated download: %v; want a transfer error naming %s", err, image)
			}
			t.Log(err)
			part := filepath.Join(dir, ".partial-4081.2.0", image+".part")
			if st, err := os.Stat(part); err != nil || st.Size() != int64(half) {
				t.Fatalf("kept part: %v, %v; want %d bytes", st, err, half)
			}
			if got := servedEntries(t, dir); len(got) != 0 {
				t.Errorf("served entries after a failed pull: %v", got)
			}

			srv.setHook(tc.resumeHook)
			var first *Progress
			r, err := m.Pull(t.Context(), Request{Channel: "stable"}, func(p Progress) {
				if p.File == image && first == nil {
					first = &p
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			reqs := srv.requests(image)
			if got, want := reqs[len(reqs)-1].Range, fmt.Sprintf("bytes=%d-", half); tc.resumeHook == nil && got != want {
				t.Errorf("resumed with Range %q; want %q", got, want)
			}
			wantResumed := int64(0)
			if tc.wantResumed {
				wantResumed = int64(half)
			}
			if first == nil || first.Resumed != wantResumed || first.Done != wantResumed {
				t.Errorf("first progress of the image = %+v; want resumed = done = %d", first, wantResumed)
			}
			if got, err := os.ReadFile(filepath.Join(dir, r.Version, image)); err != nil || !bytes.Equal(got, data) {
				t.Errorf("resumed image differs from the server's (err %v)", err)
			}
			// Files verified by the first attempt were not fetched again.
			if got := srv.requests("/flatcar_production_pxe.vmlinuz"); len(got) != 1 {
				t.Errorf("vmlinuz fetched %d times; want once", len(got))
			}
			if diff := cmp.Diff(releaseEntries(true, "4081.2.0"), servedEntries(t, dir)); diff != "" {
				t.Errorf("served entries (-want +got):\n%s", diff)
			}
		})
	}
}

// hangUpAfter answers requests for paths ending in suffix with a response
// that promises all of data, sends its first n bytes and hangs up.
func hangUpAfter(suffix string, data []byte, n int) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, suffix) {
			return false
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", len(data))
		buf.Write(data[:n])
		buf.Flush()
		return true
	}
}

func TestPullResumesCancelledDownload(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	files := srv.publish(t, key, nil, "amd64-usr", "4081.2.0", false)
	m, dir := newMirror(t, srv, armoredPublic(t, key))
	data := files[image]
	half := len(data) / 2

	var once atomic.Bool
	srv.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, image) || once.Swap(true) {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:half])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	ctx, cancel := context.WithCancel(t.Context())
	part := filepath.Join(dir, ".partial-4081.2.0", image+".part")
	go func() {
		defer cancel()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if st, err := os.Stat(part); err == nil && st.Size() == int64(half) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s did not reach the %d bytes served within 10s", part, half)
				return
			}
		}
	}()
	_, err := m.Pull(ctx, Request{Channel: "stable", Version: "4081.2.0"}, nil)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), image) {
		t.Fatalf("cancelled pull: %v; want context.Canceled naming %s", err, image)
	}
	t.Log(err)
	if got := servedEntries(t, dir); len(got) != 0 {
		t.Errorf("served entries after a cancelled pull: %v", got)
	}
	// A file verified by the first attempt is damaged in staging, and a
	// stray file appears there: the resumed pull fetches the first again
	// and does not place the second.
	staging := filepath.Join(dir, ".partial-4081.2.0")
	vmlinuz := filepath.Join(staging, "flatcar_production_pxe.vmlinuz")
	damaged, err := os.ReadFile(vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	damaged[0] ^= 1
	for name, data := range map[string][]byte{vmlinuz: damaged, filepath.Join(staging, "stray"): []byte("x")} {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var resumed int64
	if _, err := m.Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, func(p Progress) {
		if p.File == image {
			resumed = p.Resumed
		}
	}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests(image)
	if got, want := reqs[len(reqs)-1].Range, fmt.Sprintf("bytes=%d-", half); got != want {
		t.Errorf("resumed with Range %q; want %q", got, want)
	}
	if resumed != int64(half) {
		t.Errorf("Progress.Resumed = %d; want %d", resumed, half)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "4081.2.0", image)); err != nil || !bytes.Equal(got, data) {
		t.Errorf("resumed image differs from the server's (err %v)", err)
	}
	if got := srv.requests("/flatcar_production_pxe.vmlinuz"); len(got) != 2 {
		t.Errorf("vmlinuz fetched %d times; want twice (its staged copy was damaged)", len(got))
	}
	if got, err := os.ReadFile(filepath.Join(dir, "4081.2.0", "flatcar_production_pxe.vmlinuz")); err != nil || !bytes.Equal(got, files["flatcar_production_pxe.vmlinuz"]) {
		t.Errorf("vmlinuz differs from the server's (err %v)", err)
	}
	if diff := cmp.Diff(releaseEntries(true, "4081.2.0"), servedEntries(t, dir)); diff != "" {
		t.Errorf("served entries (-want +got):\n%s", diff)
	}
}

func TestCurrentNotALink(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
	m, dir := newMirror(t, srv, armoredPublic(t, key))
	if err := os.MkdirAll(filepath.Join(dir, "current"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil); !errors.Is(err, matchbox.ErrConflict) {
		t.Errorf("Pull with a directory named current: %v; want ErrConflict", err)
	}
	if diff := cmp.Diff([]string{"current"}, servedEntries(t, dir)); diff != "" {
		t.Errorf("served entries after a refused pull (-want +got):\n%s", diff)
	}
	if _, err := m.Resolve("stable", "amd64-usr", "current"); !errors.Is(err, matchbox.ErrConflict) {
		t.Errorf("Resolve with a directory named current: %v; want ErrConflict", err)
	}
}

func TestPullServerError(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
	m, dir := newMirror(t, srv, armoredPublic(t, key))
	srv.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, ".cpio.gz") {
			return false
		}
		http.Error(w, "oops", http.StatusInternalServerError)
		return true
	})
	_, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
	want := "GET " + srv.URL + "/amd64-usr/4081.2.0/flatcar_production_pxe_image.cpio.gz: 500 Internal Server Error"
	if err == nil || !strings.Contains(err.Error(), want) || errors.Is(err, ErrBadSignature) {
		t.Errorf("Pull with a failing file: %v; want it to contain %q", err, want)
	}
	if got := servedEntries(t, dir); len(got) != 0 {
		t.Errorf("served entries after a failed pull: %v", got)
	}

	_, err = m.Pull(t.Context(), Request{Channel: "stable", Version: "9999.0.0"}, nil)
	want = "GET " + srv.URL + "/amd64-usr/9999.0.0/version.txt.sig: 404 Not Found"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Pull of a missing version: %v; want it to contain %q", err, want)
	}

	// A version.txt that names another version is refused.
	files := releaseContent("4081.2.0")
	srv.set("/amd64-usr/4081.3.0/version.txt", files["version.txt"])
	srv.set("/amd64-usr/4081.3.0/version.txt.sig", detachSign(t, key, bytes.NewReader(files["version.txt"]), false, nil))
	if _, err = m.Pull(t.Context(), Request{Channel: "stable", Version: "4081.3.0"}, nil); err == nil || !strings.Contains(err.Error(), "names FLATCAR_VERSION 4081.2.0, not 4081.3.0") {
		t.Errorf("Pull of a version whose version.txt names another: %v", err)
	}
	if got := servedEntries(t, dir); len(got) != 0 {
		t.Errorf("served entries after failed pulls: %v", got)
	}
}

// signAt makes a detached signature by key dated at, bypassing the checks
// DetachSign makes on the key's validity, as a forger would.
func signAt(t *testing.T, key *packet.PrivateKey, data []byte, at time.Time) []byte {
	t.Helper()
	sig := &packet.Signature{
		Version:           key.PublicKey.Version,
		SigType:           packet.SigTypeBinary,
		PubKeyAlgo:        key.PublicKey.PubKeyAlgo,
		Hash:              crypto.SHA256,
		CreationTime:      at,
		IssuerKeyId:       &key.PublicKey.KeyId,
		IssuerFingerprint: key.PublicKey.Fingerprint,
	}
	h, err := sig.PrepareSign(nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(data)
	if err := sig.Sign(h, key, nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sig.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSignatureValidity(t *testing.T) {
	msg := []byte("FLATCAR_VERSION=4081.2.0\n")
	now := time.Now()
	made := now.Add(-72 * time.Hour)
	at := func(t time.Time) func() time.Time { return func() time.Time { return t } }

	// A key whose signing subkey lived one day, two days ago, like
	// Flatcar's yearly subkeys.
	expiring := newEntity(t, made)
	if err := expiring.AddSigningSubkey(&packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: at(made), KeyLifetimeSecs: 24 * 3600}); err != nil {
		t.Fatal(err)
	}
	sub := expiring.Subkeys[len(expiring.Subkeys)-1]
	signedInTime := detachSign(t, expiring, bytes.NewReader(msg), false,
		&packet.Config{Time: at(made.Add(time.Hour)), SigningKeyId: sub.PublicKey.KeyId})
	// The premise: go-crypto alone rejects it today.
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armoredPublic(t, expiring)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openpgp.CheckDetachedSignature(ring, bytes.NewReader(msg), bytes.NewReader(signedInTime), nil); !errors.Is(err, pgperrors.ErrKeyExpired) {
		t.Fatalf("go-crypto on a signature by an expired subkey: %v; want ErrKeyExpired", err)
	}

	// The same, then revoked.
	revoked := newEntity(t, made)
	if err := revoked.AddSigningSubkey(&packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: at(made), KeyLifetimeSecs: 24 * 3600}); err != nil {
		t.Fatal(err)
	}
	rsub := &revoked.Subkeys[len(revoked.Subkeys)-1]
	revokedSig := detachSign(t, revoked, bytes.NewReader(msg), false,
		&packet.Config{Time: at(made.Add(time.Hour)), SigningKeyId: rsub.PublicKey.KeyId})
	if err := revoked.RevokeSubkey(rsub, packet.KeySuperseded, "rotated", nil); err != nil {
		t.Fatal(err)
	}

	// A key whose primary key is revoked.
	revokedPrimary := newEntity(t, time.Time{})
	revokedPrimarySig := detachSign(t, revokedPrimary, bytes.NewReader(msg), false, nil)
	if err := revokedPrimary.RevokeKey(packet.KeyRetired, "", nil); err != nil {
		t.Fatal(err)
	}

	current := newEntity(t, time.Time{})
	other := newEntity(t, time.Time{})

	for _, tc := range []struct {
		name string
		key  *openpgp.Entity
		sig  []byte
		data []byte
		ok   bool
	}{
		{"valid key", current, detachSign(t, current, bytes.NewReader(msg), false, nil), msg, true},
		{"armored signature", current, detachSign(t, current, bytes.NewReader(msg), true, nil), msg, true},
		{"subkey expired after signing", expiring, signedInTime, msg, true},
		{"signed after the subkey expired", expiring, signAt(t, sub.PrivateKey, msg, made.Add(48*time.Hour)), msg, false},
		{"signed before the subkey existed", expiring, signAt(t, sub.PrivateKey, msg, made.Add(-time.Hour)), msg, false},
		{"dated in the future", current, signAt(t, current.PrivateKey, msg, now.Add(time.Hour)), msg, false},
		{"expired and revoked subkey", revoked, revokedSig, msg, false},
		{"revoked primary key", revokedPrimary, revokedPrimarySig, msg, false},
		{"other key", current, detachSign(t, other, bytes.NewReader(msg), false, nil), msg, false},
		{"altered data", expiring, signedInTime, []byte("FLATCAR_VERSION=4081.3.0\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(Config{AssetsPath: t.TempDir(), Key: armoredPublic(t, tc.key)})
			if err != nil {
				t.Fatal(err)
			}
			sig, err := m.parseSignature(tc.sig)
			if err == nil {
				err = m.check(bytes.NewReader(tc.data), sig)
			}
			if (err == nil) != tc.ok {
				t.Errorf("verify: %v; want ok=%v", err, tc.ok)
			}
			t.Log(err)
		})
	}

	// A whole release signed by the since-expired subkey pulls.
	srv := newFakeServer(t)
	srv.publish(t, expiring, &packet.Config{Time: at(made.Add(time.Hour)), SigningKeyId: sub.PublicKey.KeyId}, "amd64-usr", "4081.2.0", true)
	m, _ := newMirror(t, srv, armoredPublic(t, expiring))
	if _, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil); err != nil {
		t.Errorf("pull of a release signed by a since-expired subkey: %v", err)
	}
}

func TestInvalid(t *testing.T) {
	srv := newFakeServer(t)
	m, _ := newMirror(t, srv, armoredPublic(t, newEntity(t, time.Time{})))
	for _, req := range []Request{
		{Channel: "nightly"},
		{Channel: ""},
		{Channel: "stable", Arch: "riscv"},
		{Channel: "stable", Arch: "x86_64"},
		{Channel: "stable", Version: "../x"},
		{Channel: "stable", Version: "4081.2"},
		{Channel: "stable", Version: "04081.2.0"},
		{Channel: "stable", Version: "4081.2.0.1.1"},
		{Channel: "stable", Version: "4081.2.0/../../x"},
		{Channel: "../stable"},
	} {
		if _, err := m.Pull(t.Context(), req, nil); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("Pull(%+v): %v; want ErrInvalid", req, err)
		}
	}
	for _, args := range [][3]string{
		{"nightly", "amd64-usr", "current"},
		{"stable", "riscv-usr", "current"},
		{"stable", "amd64-usr", "../x"},
		{"stable", "../amd64-usr", "4081.2.0"},
	} {
		if _, err := m.Resolve(args[0], args[1], args[2]); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("Resolve%q: %v; want ErrInvalid", args, err)
		}
	}
	for _, args := range [][3]string{
		{"stable", "amd64-usr", "current"},
		{"stable", "amd64-usr", "../x"},
		{"beta", "amd64", "4081.2.0"},
	} {
		if err := m.Remove(args[0], args[1], args[2]); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("Remove%q: %v; want ErrInvalid", args, err)
		}
	}
	if _, err := m.Prune("stable", "amd64-usr", -1); !errors.Is(err, matchbox.ErrInvalid) {
		t.Errorf("Prune(-1): %v; want ErrInvalid", err)
	}
	if got := srv.requests(""); len(got) != 0 {
		t.Errorf("invalid requests reached the server: %v", got)
	}
}

func TestNew(t *testing.T) {
	m, err := New(Config{AssetsPath: t.TempDir()})
	if err != nil {
		t.Fatalf("New with the default key: %v", err)
	}
	if !strings.Contains(m.keyDesc, "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A") {
		t.Errorf("default key = %s; want Flatcar's", m.keyDesc)
	}
	// Flatcar's shipped subkeys: six expired, two revoked, the newest
	// expired 2025-03-06 and still found for old signatures.
	if keys := m.ring.KeysByIdUsage(0x85F7C8868837E271, packet.KeyFlagSign); len(keys) != 1 {
		t.Errorf("newest Flatcar signing subkey: %d keys", len(keys))
	}

	var bin bytes.Buffer
	if err := newEntity(t, time.Time{}).Serialize(&bin); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{AssetsPath: t.TempDir(), Key: bin.Bytes()}); err != nil {
		t.Errorf("New with a binary key: %v", err)
	}
	for name, cfg := range map[string]Config{
		"no assets path": {},
		"garbage key":    {AssetsPath: t.TempDir(), Key: []byte("not a key")},
		"empty key":      {AssetsPath: t.TempDir(), Key: []byte{}},
		"signature":      {AssetsPath: t.TempDir(), Key: detachSign(t, newEntity(t, time.Time{}), strings.NewReader("x"), true, nil)},
	} {
		if _, err := New(cfg); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("New with %s: %v; want ErrInvalid", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
	m, dir := newMirror(t, srv, armoredPublic(t, key))
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = m.Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, nil)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := srv.requests(image); len(got) != 1 {
		t.Errorf("image fetched %d times; want once", len(got))
	}
	if diff := cmp.Diff(releaseEntries(true, "4081.2.0"), servedEntries(t, dir)); diff != "" {
		t.Errorf("served entries (-want +got):\n%s", diff)
	}
}

func TestPullWaitsForAnotherProcess(t *testing.T) {
	key := newEntity(t, time.Time{})
	srv := newFakeServer(t)
	srv.publish(t, key, nil, "amd64-usr", "4081.2.0", true)
	m, dir := newMirror(t, srv, armoredPublic(t, key))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A lock taken through another open file description is what another
	// process holding it looks like to flock.
	unlock, err := lockFile(t.Context(), filepath.Join(dir, ".partial-4081.2.0.lock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := m.Pull(ctx, Request{Channel: "stable", Version: "4081.2.0"}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pull while another process holds the lock: %v; want it to wait until the deadline", err)
	} else {
		t.Log(err)
	}
	unlock()
	if _, err := m.Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, nil); err != nil {
		t.Fatalf("Pull after the lock was released: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	sorted := []string{"3975.2.2", "4081.2.0", "4081.2.0.1", "4081.10.0", "4152.0.0", "10000.0.0"}
	for i := range sorted {
		for j := range sorted {
			got := compareVersions(sorted[i], sorted[j])
			if want := cmpInt(i, j); got != want {
				t.Errorf("compareVersions(%s, %s) = %d; want %d", sorted[i], sorted[j], got, want)
			}
		}
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func FuzzFlatcarVersion(f *testing.F) {
	f.Add([]byte("FLATCAR_BUILD=4081\nFLATCAR_VERSION=4081.2.0\nFLATCAR_VERSION_ID=4081.2.0\n"))
	f.Add([]byte("FLATCAR_VERSION=\"4081.2.0\"\r\n"))
	f.Add([]byte("FLATCAR_VERSION=../../etc\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := flatcarVersion(data)
		if err == nil && checkVersion(v) != nil {
			t.Errorf("flatcarVersion returned %q, not a valid version", v)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	f.Add("bytes 100-199/200")
	f.Add("bytes 0-0/*")
	f.Add("bytes -1-5/3")
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < 0 || (total != -1 && total <= start)) {
			t.Errorf("parseContentRange(%q) = %d, %d", s, start, total)
		}
	})
}

// repeatReader yields size bytes repeating block.
type repeatReader struct {
	block     []byte
	off, size int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.size-r.off)]
	n := copy(p, r.block[r.off%int64(len(r.block)):])
	r.off += int64(n)
	return n, nil
}

func BenchmarkPull1GiB(b *testing.B) {
	const size = 1 << 30
	key := newEntity(b, time.Time{})
	block := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(block)
	newImage := func() io.Reader { return &repeatReader{block: block, size: size} }

	files := releaseContent("4081.2.0")
	delete(files, image)
	srv := newFakeServer(b)
	for name, data := range files {
		srv.set("/amd64-usr/4081.2.0/"+name, data)
		srv.set("/amd64-usr/4081.2.0/"+name+".sig", detachSign(b, key, bytes.NewReader(data), false, nil))
	}
	start := time.Now()
	srv.set("/amd64-usr/4081.2.0/"+image+".sig", detachSign(b, key, newImage(), false, nil))
	b.Logf("signed 1 GiB in %v", time.Since(start).Round(time.Millisecond))
	srv.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/amd64-usr/4081.2.0/"+image {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		io.Copy(w, newImage())
		return true
	})

	var maxDelta uint64
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		assets := filepath.Join(b.TempDir(), "assets")
		m, err := New(Config{AssetsPath: assets, Key: armoredPublic(b, key), BaseURL: srv.URL})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := make(chan struct{})
		sampled := make(chan uint64)
		go func() {
			var peak uint64
			var ms runtime.MemStats
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				select {
				case <-stop:
					sampled <- peak
					return
				case <-tick.C:
				}
			}
		}()
		if _, err := m.Pull(context.Background(), Request{Channel: "stable", Version: "4081.2.0"}, nil); err != nil {
			b.Fatal(err)
		}
		close(stop)
		if peak := <-sampled; peak > before.HeapInuse {
			maxDelta = max(maxDelta, peak-before.HeapInuse)
		}
		b.StopTimer()
		if err := os.RemoveAll(assets); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(maxDelta)/1e6, "MB-heap")
}
