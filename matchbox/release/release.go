package release

import (
	"crypto/rsa"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"matchbox.dev/matchbox"
)

//go:embed flatcar-image-signing-key.asc
var defaultKey []byte

// DefaultKey returns the embedded ASCII-armored Flatcar image signing key.
// It is a fallback: Flatcar adds a new signing subkey every year, so
// releases signed after this copy's newest subkey was made do not verify
// with it; operators pass the current key (from flatcar.org) as
// Config.Key.
func DefaultKey() []byte {
	return append([]byte(nil), defaultKey...)
}

// ErrBadSignature is returned (wrapped) when a file's detached signature
// does not verify with the configured key: the file was altered, signed by
// another key, or signed by a revoked key.
var ErrBadSignature = errors.New("bad signature")

// releaseFiles are the files of a release, in the order Pull fetches them:
// version.txt first, so a wrong version is noticed before the large files.
var releaseFiles = []string{
	"version.txt",
	"flatcar_production_pxe.vmlinuz",
	"flatcar_production_pxe_image.cpio.gz",
	"flatcar_production_image.bin.bz2",
}

// channels are the Flatcar release channels.
var channels = []string{"alpha", "beta", "lts", "stable"}

// boards are the Flatcar boards by architecture, in List order.
var boards = []struct{ arch, board string }{
	{"amd64", "amd64-usr"},
	{"arm64", "arm64-usr"},
}

const currentName = "current"

// Config configures a Mirror.
type Config struct {
	// AssetsPath is matchbox's assets directory; releases go under
	// <AssetsPath>/flatcar/. Required.
	AssetsPath string
	// Key is the OpenPGP public key ring (ASCII-armored or binary) that
	// release signatures must verify with. Nil means DefaultKey().
	Key []byte
	// BaseURL replaces https://<channel>.release.flatcar-linux.net: files
	// are fetched from <BaseURL>/<board>/<version>/, "{channel}" in it
	// replaced by the channel. For mirrors and tests.
	BaseURL string
	// Client fetches the files. Nil means a client with connect, TLS and
	// response-header timeouts but no overall timeout (images are large;
	// a stalled transfer is cut off by Pull itself).
	Client *http.Client
	// Logger receives progress and failures. Nil discards them.
	Logger *slog.Logger

	// UpdateBaseURL is the update release server (e.g.
	// DefaultUpdateBaseURL) a pull fetches each release's update payloads
	// from: <UpdateBaseURL>/<board>/<version>/<payload>. Empty: payloads
	// are not mirrored.
	UpdateBaseURL string
	// PayloadKey verifies the payloads. Nil means DefaultPayloadKey().
	PayloadKey *rsa.PublicKey
	// Extensions are the extension payloads a pull mirrors besides the OS
	// payload (UpdatePayloadName): oem-<ID> or flatcar-<NAME>, fetched as
	// <name>.gz. They need UpdateBaseURL.
	Extensions []string
}

// Mirror keeps verified Flatcar releases under an assets directory.
// Its methods are safe for concurrent use, also by several processes
// sharing the directory.
type Mirror struct {
	root    string // <AssetsPath>/flatcar
	ring    openpgp.EntityList
	keyDesc string
	baseURL string
	client  *http.Client
	log     *slog.Logger
	locks   keyedMutex

	updateBaseURL string
	payloadKey    *rsa.PublicKey
	// payloads are the payload file names a pull mirrors; none when
	// payloads are not mirrored.
	payloads []string
}

// New returns a Mirror. It fails when the key holds no usable signing key
// or an extension name is not one.
func New(cfg Config) (*Mirror, error) {
	if cfg.AssetsPath == "" {
		return nil, fmt.Errorf("release: assets path is required: %w", matchbox.ErrInvalid)
	}
	payloads, err := payloadNames(cfg.UpdateBaseURL, cfg.Extensions)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	key := cfg.Key
	if key == nil {
		key = defaultKey
	}
	ring, err := readKeyRing(key)
	if err != nil {
		return nil, fmt.Errorf("release: signing key: %w", err)
	}
	m := &Mirror{
		root:    filepath.Join(cfg.AssetsPath, "flatcar"),
		ring:    ring,
		keyDesc: describeKeys(ring),
		baseURL: strings.TrimSuffix(cfg.BaseURL, "/"),
		client:  cfg.Client,
		log:     cfg.Logger,

		updateBaseURL: strings.TrimSuffix(cfg.UpdateBaseURL, "/"),
		payloadKey:    cfg.PayloadKey,
		payloads:      payloads,
	}
	if m.payloadKey == nil {
		m.payloadKey = DefaultPayloadKey()
	}
	if m.client == nil {
		m.client = defaultClient()
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if !hasValidSigningKey(ring, time.Now()) {
		m.log.Warn("no signing key in the key ring is valid today: only releases signed while a key was valid will verify; get the current key from flatcar.org",
			"key", m.keyDesc)
	}
	return m, nil
}

func defaultClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          10,
		// Files are compared byte for byte with their signatures; a
		// transparently decompressed body would never verify.
		DisableCompression: true,
	}}
}

// Request says which release to pull.
type Request struct {
	// Channel is stable, beta, alpha or lts; there is no default.
	Channel string
	// Version is "current" (the default when empty) or X.Y.Z[.W].
	Version string
	// Arch is amd64 (the default when empty) or arm64.
	Arch string
}

// Progress reports a file download in progress.
type Progress struct {
	File    string // e.g. "flatcar_production_image.bin.bz2"
	Done    int64  // bytes of this file on disk so far, resumed bytes included
	Total   int64  // the file's size; -1 when unknown
	Resumed int64  // bytes that were already on disk when this download started
}

// File is a verified file of a release.
type File struct {
	Name string
	Size int64
}

// Release is a verified release in the mirror.
type Release struct {
	Channel, Board, Version string
	// Current reports whether the board's current link names this release.
	Current bool
	// Files are the verified files (their .sig files sit next to them).
	Files []File
	// Payloads are the verified update payloads, in the same directory.
	Payloads []Payload
	// Pulled is when the release was placed (the version directory's mtime).
	Pulled time.Time
}

// BoardFor returns the Flatcar board name of an architecture: amd64-usr for
// amd64, arm64-usr for arm64.
func BoardFor(arch string) (string, error) {
	for _, b := range boards {
		if arch == b.arch {
			return b.board, nil
		}
	}
	return "", fmt.Errorf("architecture %q: want amd64 or arm64: %w", arch, matchbox.ErrInvalid)
}

// normalize validates a request and fills in its defaults.
func (r Request) normalize() (channel, board, version string, err error) {
	if err := checkChannel(r.Channel); err != nil {
		return "", "", "", err
	}
	arch := r.Arch
	if arch == "" {
		arch = "amd64"
	}
	if board, err = BoardFor(arch); err != nil {
		return "", "", "", err
	}
	version = r.Version
	if version == "" {
		version = currentName
	}
	if version != currentName {
		if err := checkVersion(version); err != nil {
			return "", "", "", err
		}
	}
	return r.Channel, board, version, nil
}

func checkChannel(channel string) error {
	for _, c := range channels {
		if channel == c {
			return nil
		}
	}
	return fmt.Errorf("channel %q: want stable, beta, alpha or lts: %w", channel, matchbox.ErrInvalid)
}

func checkBoard(board string) error {
	for _, b := range boards {
		if board == b.board {
			return nil
		}
	}
	return fmt.Errorf("board %q: want amd64-usr or arm64-usr: %w", board, matchbox.ErrInvalid)
}

func checkVersion(version string) error {
	if _, ok := parseVersion(version); !ok {
		return fmt.Errorf("version %q: want current or X.Y.Z[.W]: %w", version, matchbox.ErrInvalid)
	}
	return nil
}

// parseVersion parses X.Y.Z or X.Y.Z.W (see matchbox.ParseVersion): one
// spelling per version, so each has exactly one directory name.
func parseVersion(s string) ([]uint64, bool) { return matchbox.ParseVersion(s) }

// compareVersions compares two versions numerically (see
// matchbox.CompareVersions).
func compareVersions(a, b string) int { return matchbox.CompareVersions(a, b) }

// flatcarVersion reads FLATCAR_VERSION from a version.txt.
func flatcarVersion(data []byte) (string, error) {
	for line := range strings.Lines(string(data)) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || key != "FLATCAR_VERSION" {
			continue
		}
		value = strings.Trim(value, `"'`)
		if err := checkVersion(value); err != nil {
			return "", fmt.Errorf("FLATCAR_VERSION: %w", err)
		}
		return value, nil
	}
	return "", fmt.Errorf("no FLATCAR_VERSION line: %w", matchbox.ErrInvalid)
}

func (m *Mirror) boardDir(channel, board string) string {
	return filepath.Join(m.root, channel, board)
}

// base returns the URL of a board's directory on the release server.
func (m *Mirror) base(channel, board string) string {
	if m.baseURL != "" {
		return strings.ReplaceAll(m.baseURL, "{channel}", channel) + "/" + board
	}
	return "https://" + channel + ".release.flatcar-linux.net/" + board
}

// release describes a version directory.
func release(dir, channel, board, version, current string) (Release, error) {
	st, err := os.Stat(filepath.Join(dir, version))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Release{}, fmt.Errorf("release %s/%s/%s: %w", channel, board, version, matchbox.ErrNotFound)
		}
		return Release{}, err
	}
	r := Release{Channel: channel, Board: board, Version: version, Current: version == current, Pulled: st.ModTime()}
	for _, name := range releaseFiles {
		fi, err := os.Stat(filepath.Join(dir, version, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return Release{}, err
		}
		r.Files = append(r.Files, File{Name: name, Size: fi.Size()})
	}
	payloads, err := readPayloads(filepath.Join(dir, version))
	if err != nil {
		return Release{}, err
	}
	r.Payloads = payloads
	return r, nil
}
