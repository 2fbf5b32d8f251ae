package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"matchbox.dev/matchbox"
)

// DefaultUpdateBaseURL is Flatcar's update release server, which holds the
// update payloads of every release under <board>/<version>/.
const DefaultUpdateBaseURL = "https://update.release.flatcar-linux.net"

// UpdatePayloadName is the OS update payload's file name.
const UpdatePayloadName = "flatcar_production_update.gz"

// payloadsFile lists a version directory's verified payloads.
const payloadsFile = "payloads.json"

// Payload is a verified update payload in the mirror, a file beside the
// release's other files.
type Payload struct {
	// Name is the file name: UpdatePayloadName, oem-<ID>.gz or
	// flatcar-<NAME>.gz.
	Name string `json:"name"`
	PayloadInfo
}

// payloadList is the content of payloads.json.
type payloadList struct {
	Payloads []Payload `json:"payloads"`
}

// extensionFile checks an extension name (oem-<ID> or flatcar-<NAME>, with
// or without .gz) and returns its payload's file name.
func extensionFile(name string) (string, error) {
	base := strings.TrimSuffix(name, ".gz")
	rest, ok := strings.CutPrefix(base, "oem-")
	if !ok {
		rest, ok = strings.CutPrefix(base, "flatcar-")
	}
	valid := ok && rest != ""
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			valid = false
		}
	}
	if !valid || strings.Contains(rest, "..") {
		return "", fmt.Errorf("extension %q: want oem-<ID> or flatcar-<NAME> (letters, digits, '-', '_', '.'): %w", name, matchbox.ErrInvalid)
	}
	return base + ".gz", nil
}

// payloadNames returns the configured payloads' file names: the OS
// payload, then the extensions in the order given, each once.
func payloadNames(updateBaseURL string, extensions []string) ([]string, error) {
	if updateBaseURL == "" {
		if len(extensions) > 0 {
			return nil, fmt.Errorf("extensions %v: no update server to fetch them from: %w", extensions, matchbox.ErrInvalid)
		}
		return nil, nil
	}
	names := []string{UpdatePayloadName}
	for _, e := range extensions {
		file, err := extensionFile(e)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(names, file) {
			names = append(names, file)
		}
	}
	return names, nil
}

// updateBase returns the URL of a release's directory on the update
// release server.
func (m *Mirror) updateBase(board, version string) string {
	return m.updateBaseURL + "/" + board + "/" + version
}

// Payloads returns the verified update payloads of a mirrored release, as
// listed in its payloads.json: one small read, for the update service.
// The error wraps matchbox.ErrNotFound when the release is not mirrored.
func (m *Mirror) Payloads(channel, board, version string) ([]Payload, error) {
	if err := checkRelease(channel, board, version); err != nil {
		return nil, err
	}
	dir := filepath.Join(m.boardDir(channel, board), version)
	if !isDir(dir) {
		return nil, fmt.Errorf("release %s/%s/%s: %w", channel, board, version, matchbox.ErrNotFound)
	}
	return readPayloads(dir)
}

// readPayloads reads a directory's payloads.json; none is no payload.
func readPayloads(dir string) ([]Payload, error) {
	data, err := readSmallFile(filepath.Join(dir, payloadsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list payloadList
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, payloadsFile), err)
	}
	return list.Payloads, nil
}

// writePayloads replaces a directory's payloads.json atomically, the OS
// payload first.
func writePayloads(dir string, payloads []Payload) error {
	slices.SortFunc(payloads, func(a, b Payload) int {
		if aOS, bOS := a.Name == UpdatePayloadName, b.Name == UpdatePayloadName; aOS != bOS {
			if aOS {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	data, err := json.MarshalIndent(payloadList{Payloads: payloads}, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+payloadsFile+".new")
	if err := writeFileSync(tmp, append(data, '\n')); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, payloadsFile)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// fetchPayloads puts every configured payload that dir (a release's
// staging or version directory) lacks into it, verified, and lists it in
// payloads.json. A payload listed there whose file has the listed size is
// not fetched again. It returns how many bytes came over the network.
func (m *Mirror) fetchPayloads(ctx context.Context, log *slog.Logger, dir, from string, progress func(Progress)) (int64, error) {
	if len(m.payloads) == 0 {
		return 0, nil
	}
	listed, err := readPayloads(dir)
	if err != nil {
		// Written atomically by us, so damaged by hand: start over.
		log.Warn("payload list unreadable; fetching the payloads again", "err", err)
		listed = nil
	}
	// Only entries whose file is there count.
	var have []Payload
	for _, p := range listed {
		if fi, err := os.Stat(filepath.Join(dir, p.Name)); err == nil && fi.Mode().IsRegular() && fi.Size() == p.Size {
			have = append(have, p)
		}
	}
	var fetched int64
	for _, name := range m.payloads {
		if slices.ContainsFunc(have, func(p Payload) bool { return p.Name == name }) {
			continue
		}
		p, n, err := m.fetchPayload(ctx, log, from+"/"+name, dir, name, progress)
		fetched += n
		if err != nil {
			what := "update payload"
			if name != UpdatePayloadName {
				what = "extension payload"
			}
			return fetched, fmt.Errorf("%s %s: %w", what, name, err)
		}
		have = append(have, p)
		if err := writePayloads(dir, have); err != nil {
			return fetched, err
		}
	}
	return fetched, nil
}

// fetchPayload downloads one payload into dir through the hidden
// .<name>.part, verifying it as it is written, and renames it to <name>
// once verified; a payload that does not verify is deleted.
func (m *Mirror) fetchPayload(ctx context.Context, log *slog.Logger, u, dir, name string, progress func(Progress)) (Payload, int64, error) {
	kind := extensionPayload
	if name == UpdatePayloadName {
		kind = osPayload
	}
	part := filepath.Join(dir, "."+name+".part")
	var info PayloadInfo
	_, fetched, err := m.download(ctx, log, u, part, name, progress, func(r io.Reader, total int64) error {
		var err error
		if info, err = verifyPayload(ctx, r, total, m.payloadKey, kind); err != nil {
			return fmt.Errorf("%s: %w", u, err)
		}
		return nil
	})
	if err != nil {
		return Payload{}, fetched, err
	}
	if err := os.Rename(part, filepath.Join(dir, name)); err != nil {
		return Payload{}, fetched, err
	}
	if err := syncDir(dir); err != nil {
		return Payload{}, fetched, err
	}
	log.Info("update payload verified", "file", name, "bytes", info.Size, "fetched", fetched)
	return Payload{Name: name, PayloadInfo: info}, fetched, nil
}
