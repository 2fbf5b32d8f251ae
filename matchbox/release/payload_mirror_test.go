package release

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/release/payloadtest"
)

// The update server's payloads live under /update/<board>/<version>/ of
// the fake server.
const updatePath = "/update"

var testExtensions = []string{"oem-qemu", "flatcar-docker"}

// publishPayloads puts a release's payloads, signed by key, on the update
// server and returns them by file name. Each differs per version and name.
func (s *fakeServer) publishPayloads(t testing.TB, key *rsa.PrivateKey, board, version string, names ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range names {
		data := build(t, payloadtest.Payload{Blobs: payloadBlobs(version, name), Signers: []payloadtest.Signer{{Key: key}}})
		s.set(updatePath+"/"+board+"/"+version+"/"+name, data)
		out[name] = data
	}
	return out
}

// payloadBlobs are the data blobs of a test payload: two, the first not a
// whole number of blocks.
func payloadBlobs(version, name string) [][]byte {
	blob := bytes.Repeat([]byte(version+"/"+name+"\n"), 2000)
	return [][]byte{blob[:5000], blob[5000:]}
}

// wantPayload is what the mirror should record for a payload publishPayloads
// made: the partition is the blobs, each padded to whole blocks.
func wantPayload(version, name string, data []byte) Payload {
	var partition []byte
	for _, b := range payloadBlobs(version, name) {
		partition = append(partition, b...)
		partition = append(partition, make([]byte, (payloadtest.BlockSize-len(b)%payloadtest.BlockSize)%payloadtest.BlockSize)...)
	}
	s1, s256, part := sha1.Sum(data), sha256.Sum256(data), sha256.Sum256(partition)
	return Payload{Name: name, PayloadInfo: PayloadInfo{Size: int64(len(data)), SHA1: s1[:], SHA256: s256[:],
		NewPartitionSize: uint64(len(partition)), NewPartitionSHA256: part[:]}}
}

// newPayloadMirror is newMirror with payloads: the OS payload and
// extensions, verified with key.
func newPayloadMirror(t testing.TB, srv *fakeServer, pgpKey []byte, key *rsa.PrivateKey, extensions ...string) (*Mirror, string) {
	t.Helper()
	return mirrorIn(t, t.TempDir(), payloadConfig(srv, pgpKey, key, extensions...))
}

func payloadConfig(srv *fakeServer, pgpKey []byte, key *rsa.PrivateKey, extensions ...string) Config {
	return Config{Key: pgpKey, BaseURL: srv.URL, UpdateBaseURL: srv.URL + updatePath, PayloadKey: &key.PublicKey, Extensions: extensions}
}

// allFiles lists every file under dir, hidden ones included, relative.
func allFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPullPayloads(t *testing.T) {
	pgp, key := newEntity(t, time.Time{}), payloadKey()
	srv := newFakeServer(t)
	srv.publish(t, pgp, nil, "amd64-usr", "4081.2.0", true)
	names := []string{UpdatePayloadName, "oem-qemu.gz", "flatcar-docker.gz"}
	payloads := srv.publishPayloads(t, key, "amd64-usr", "4081.2.0", names...)
	m, dir := newPayloadMirror(t, srv, armoredPublic(t, pgp), key, testExtensions...)

	last := map[string]Progress{}
	r, err := m.Pull(t.Context(), Request{Channel: "stable"}, func(p Progress) { last[p.File] = p })
	if err != nil {
		t.Fatal(err)
	}
	// payloads.json lists the OS payload first.
	want := []Payload{wantPayload("4081.2.0", UpdatePayloadName, payloads[UpdatePayloadName]),
		wantPayload("4081.2.0", "flatcar-docker.gz", payloads["flatcar-docker.gz"]), wantPayload("4081.2.0", "oem-qemu.gz", payloads["oem-qemu.gz"])}
	if diff := cmp.Diff(want, r.Payloads); diff != "" {
		t.Errorf("Release.Payloads (-want +got):\n%s", diff)
	}
	if got, err := m.Payloads("stable", "amd64-usr", "4081.2.0"); err != nil || !cmp.Equal(got, want) {
		t.Errorf("Payloads = %v, %v; want %v", got, err, want)
	}
	for name, data := range payloads {
		got, err := os.ReadFile(filepath.Join(dir, "4081.2.0", name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: content differs from the server's (err %v)", name, err)
		}
		if p := last[name]; p.Done != int64(len(data)) || p.Total != int64(len(data)) {
			t.Errorf("last progress of %s = %+v; want done = total = %d", name, p, len(data))
		}
	}
	// Beside the release's files, nothing hidden left over.
	wantFiles := slices.Concat(releaseEntries(true, "4081.2.0"), []string{"4081.2.0/payloads.json"}, prefixed("4081.2.0/", names))
	slices.Sort(wantFiles)
	if diff := cmp.Diff(wantFiles, servedEntries(t, dir)); diff != "" {
		t.Errorf("served entries (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(slices.DeleteFunc(slices.Clone(wantFiles), func(f string) bool { return f == "4081.2.0" }), allFiles(t, dir)); diff != "" {
		t.Errorf("all files in the board directory, hidden ones too (-want +got):\n%s", diff)
	}
	if list, err := m.List(); err != nil || len(list) != 1 || !cmp.Equal(list[0].Payloads, want) {
		t.Errorf("List = %+v, %v", list, err)
	}

	// Pulled again: nothing but current/version.txt is fetched.
	before := len(srv.requests(""))
	if _, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := srv.requests("")[before:]; len(got) != 2 {
		t.Errorf("pulling a pulled release fetched %v", got)
	}
}

func prefixed(prefix string, names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, prefix+n)
	}
	return out
}

// A payload that does not verify fails the pull naming it, and leaves
// nothing of it anywhere: the release is not placed either.
func TestPullRefusesBadPayloads(t *testing.T) {
	pgp, key, other := newEntity(t, time.Time{}), payloadKey(), otherKey()
	for _, tc := range []struct {
		name, file string
		data       func(good []byte) []byte
		code       int
	}{
		{"tampered OS payload", UpdatePayloadName, func(good []byte) []byte {
			b := bytes.Clone(good)
			b[len(b)-300] ^= 1 // in the last data blob
			return b
		}, 29},
		{"OS payload signed by another key", UpdatePayloadName, func([]byte) []byte { return payloadtest.Signed(other) }, 18},
		{"unsigned extension", "oem-qemu.gz", func([]byte) []byte { return build(t, payloadtest.Payload{}) }, 17},
		{"extension with trailing bytes", "flatcar-docker.gz", func(good []byte) []byte { return append(bytes.Clone(good), "junk"...) }, 11},
		{"gzip instead of a payload", UpdatePayloadName, func([]byte) []byte { return []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3} }, 21},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.publish(t, pgp, nil, "amd64-usr", "4081.2.0", true)
			payloads := srv.publishPayloads(t, key, "amd64-usr", "4081.2.0", UpdatePayloadName, "oem-qemu.gz", "flatcar-docker.gz")
			srv.set(updatePath+"/amd64-usr/4081.2.0/"+tc.file, tc.data(payloads[tc.file]))
			m, dir := newPayloadMirror(t, srv, armoredPublic(t, pgp), key, testExtensions...)

			_, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
			var pe *PayloadError
			if !errors.Is(err, ErrBadPayload) || !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("Pull: %v; want ErrBadPayload code %d naming %s", err, tc.code, tc.file)
			}
			t.Log(err)
			if got := servedEntries(t, dir); len(got) != 0 {
				t.Errorf("served entries after a refused payload: %v", got)
			}
			for _, f := range allFiles(t, dir) {
				if strings.Contains(f, tc.file) {
					t.Errorf("the refused payload left %s", f)
				}
			}

			// Fixed on the server: the next pull places the release,
			// fetching only what was not verified yet.
			srv.set(updatePath+"/amd64-usr/4081.2.0/"+tc.file, payloads[tc.file])
			before := srv.requests(image)
			if _, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil); err != nil {
				t.Fatal(err)
			}
			if got := srv.requests(image); len(got) != len(before) {
				t.Errorf("the verified image was fetched again")
			}
			if got, err := os.ReadFile(filepath.Join(dir, "4081.2.0", tc.file)); err != nil || !bytes.Equal(got, payloads[tc.file]) {
				t.Errorf("%s after the fix: %v", tc.file, err)
			}
		})
	}
}

func TestPullMissingExtension(t *testing.T) {
	pgp, key := newEntity(t, time.Time{}), payloadKey()
	srv := newFakeServer(t)
	srv.publish(t, pgp, nil, "amd64-usr", "4081.2.0", true)
	srv.publishPayloads(t, key, "amd64-usr", "4081.2.0", UpdatePayloadName, "oem-qemu.gz")
	m, dir := newPayloadMirror(t, srv, armoredPublic(t, pgp), key, "oem-qemu", "flatcar-nothere")
	_, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
	if err == nil || !strings.Contains(err.Error(), "extension payload flatcar-nothere.gz") || !strings.Contains(err.Error(), "404") ||
		!strings.Contains(err.Error(), srv.URL+updatePath+"/amd64-usr/4081.2.0/flatcar-nothere.gz") {
		t.Fatalf("Pull with an extension the server lacks: %v; want a 404 naming it and its URL", err)
	}
	t.Log(err)
	if got := servedEntries(t, dir); len(got) != 0 {
		t.Errorf("served entries: %v", got)
	}
}

// A release pulled without payloads gets them when a later pull asks for
// them, without fetching the release again; the links stay.
func TestPullAddsPayloadsToPulledRelease(t *testing.T) {
	pgp, key := newEntity(t, time.Time{}), payloadKey()
	srv := newFakeServer(t)
	srv.publish(t, pgp, nil, "amd64-usr", "4081.2.0", true)
	payloads := srv.publishPayloads(t, key, "amd64-usr", "4081.2.0", UpdatePayloadName, "oem-qemu.gz", "flatcar-docker.gz")
	plain, dir := newMirror(t, srv, armoredPublic(t, pgp))
	if _, err := plain.Pull(t.Context(), Request{Channel: "stable"}, nil); err != nil {
		t.Fatal(err)
	}
	assets := filepath.Dir(filepath.Dir(filepath.Dir(dir)))
	withPayloads := func(extensions ...string) *Mirror {
		m, _ := mirrorIn(t, assets, payloadConfig(srv, armoredPublic(t, pgp), key, extensions...))
		return m
	}
	before := len(srv.requests(""))
	r, err := withPayloads("oem-qemu").Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fetched []string
	for _, req := range srv.requests("")[before:] {
		fetched = append(fetched, req.Path)
	}
	if want := []string{updatePath + "/amd64-usr/4081.2.0/" + UpdatePayloadName, updatePath + "/amd64-usr/4081.2.0/oem-qemu.gz"}; !cmp.Equal(fetched, want) {
		t.Errorf("fetched %v; want only the payloads %v", fetched, want)
	}
	if len(r.Payloads) != 2 || !r.Current {
		t.Errorf("release after adding payloads: %+v", r)
	}
	// Another extension later: only it is fetched, and payloads.json
	// keeps the others.
	before = len(srv.requests(""))
	r, err = withPayloads("oem-qemu", "flatcar-docker").Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.requests("")[before:]; len(got) != 1 || !strings.HasSuffix(got[0].Path, "/flatcar-docker.gz") {
		t.Errorf("fetched %v; want only flatcar-docker.gz", got)
	}
	var got []string
	for _, p := range r.Payloads {
		got = append(got, p.Name)
	}
	if want := []string{UpdatePayloadName, "flatcar-docker.gz", "oem-qemu.gz"}; !cmp.Equal(got, want) {
		t.Errorf("payloads %v; want %v", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "4081.2.0", "flatcar-docker.gz")); err != nil || !bytes.Equal(b, payloads["flatcar-docker.gz"]) {
		t.Errorf("flatcar-docker.gz: %v", err)
	}
	for _, f := range allFiles(t, dir) {
		if strings.Contains(f, "/.") || strings.HasPrefix(f, ".") {
			t.Errorf("left behind: %s", f)
		}
	}
	// A payloads.json damaged by hand: the payloads are fetched again.
	if err := os.WriteFile(filepath.Join(dir, "4081.2.0", payloadsFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	before = len(srv.requests(""))
	if r, err = withPayloads("oem-qemu", "flatcar-docker").Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, nil); err != nil || len(r.Payloads) != 3 {
		t.Fatalf("Pull over a damaged payloads.json: %+v, %v", r.Payloads, err)
	}
	if got := srv.requests("")[before:]; len(got) != 3 {
		t.Errorf("fetched %v; want the three payloads again", got)
	}
	// A refused payload for a placed release leaves the release as it was.
	srv.publishPayloads(t, otherKey(), "amd64-usr", "4081.2.0", "oem-azure.gz")
	_, err = withPayloads("oem-azure").Pull(t.Context(), Request{Channel: "stable", Version: "4081.2.0"}, nil)
	if !errors.Is(err, ErrBadPayload) {
		t.Fatalf("Pull with a payload by another key: %v; want ErrBadPayload", err)
	}
	if list, err := plain.List(); err != nil || len(list) != 1 || len(list[0].Payloads) != 3 {
		t.Errorf("after the refused payload: %+v, %v", list, err)
	}
	for _, f := range allFiles(t, dir) {
		if strings.Contains(f, "oem-azure") {
			t.Errorf("the refused payload left %s", f)
		}
	}
}

// A payload download cut off midway resumes with a Range request and is
// verified whole.
func TestPullResumesPayload(t *testing.T) {
	pgp, key := newEntity(t, time.Time{}), payloadKey()
	srv := newFakeServer(t)
	srv.publish(t, pgp, nil, "amd64-usr", "4081.2.0", true)
	payloads := srv.publishPayloads(t, key, "amd64-usr", "4081.2.0", UpdatePayloadName)
	data := payloads[UpdatePayloadName]
	half := len(data) / 2
	m, dir := newPayloadMirror(t, srv, armoredPublic(t, pgp), key)
	srv.setHook(hangUpAfter(UpdatePayloadName, data, half))
	_, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
	if err == nil || errors.Is(err, ErrBadPayload) || !strings.Contains(err.Error(), "kept to resume") {
		t.Fatalf("cut-off payload: %v; want a transfer error, kept", err)
	}
	part := filepath.Join(dir, ".partial-4081.2.0", "."+UpdatePayloadName+".part")
	if st, err := os.Stat(part); err != nil || st.Size() != int64(half) {
		t.Fatalf("kept part: %v, %v; want %d bytes", st, err, half)
	}
	srv.setHook(nil)
	r, err := m.Pull(t.Context(), Request{Channel: "stable"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests(UpdatePayloadName)
	if got, want := reqs[len(reqs)-1].Range, fmt.Sprintf("bytes=%d-", half); got != want {
		t.Errorf("resumed with Range %q; want %q", got, want)
	}
	if diff := cmp.Diff([]Payload{wantPayload("4081.2.0", UpdatePayloadName, data)}, r.Payloads); diff != "" {
		t.Errorf("payloads (-want +got):\n%s", diff)
	}
}

func TestNewPayloadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"extensions without an update server": {Extensions: []string{"oem-qemu"}},
		"not an extension":                    {UpdateBaseURL: "http://x", Extensions: []string{"docker"}},
		"a path":                              {UpdateBaseURL: "http://x", Extensions: []string{"oem-../../x"}},
		"empty name":                          {UpdateBaseURL: "http://x", Extensions: []string{"flatcar-"}},
	} {
		cfg.AssetsPath = t.TempDir()
		if _, err := New(cfg); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("New with %s: %v; want ErrInvalid", name, err)
		}
	}
	m, err := New(Config{AssetsPath: t.TempDir(), UpdateBaseURL: DefaultUpdateBaseURL + "/", Extensions: []string{"oem-qemu.gz", "oem-qemu", "flatcar-docker"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{UpdatePayloadName, "oem-qemu.gz", "flatcar-docker.gz"}; !cmp.Equal(m.payloads, want) {
		t.Errorf("payloads %v; want %v", m.payloads, want)
	}
	if got := m.updateBase("amd64-usr", "4081.2.0"); got != "https://update.release.flatcar-linux.net/amd64-usr/4081.2.0" {
		t.Errorf("update base %s", got)
	}
	if !m.payloadKey.Equal(DefaultPayloadKey()) {
		t.Errorf("payload key is not the default")
	}
}
