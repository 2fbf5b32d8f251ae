package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"matchbox.dev/matchbox"
)

// stallTimeout cuts off a transfer that receives no data for this long;
// the client has no overall timeout because images are large.
const stallTimeout = 2 * time.Minute

// progressEvery is the most often Pull reports progress within one file.
const progressEvery = 100 * time.Millisecond

var errStalled = errors.New("transfer stalled")

// Pull fetches a release into the mirror unless it is there already,
// verifying every file with the key before anything appears under a
// non-dot path, and moves the board's current link to it when it is newer
// than the one current names. An interrupted pull resumes where it
// stopped. progress, when not nil, is called from Pull's goroutine as
// files download.
func (m *Mirror) Pull(ctx context.Context, req Request, progress func(Progress)) (Release, error) {
	channel, board, version, err := req.normalize()
	if err != nil {
		return Release{}, fmt.Errorf("pull: %w", err)
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	base := m.base(channel, board)
	if version == currentName {
		if version, err = m.currentVersion(ctx, base); err != nil {
			return Release{}, fmt.Errorf("pull %s/%s/current: %w", channel, board, err)
		}
	}
	r, err := m.pull(ctx, channel, board, version, base+"/"+version, progress)
	if err != nil {
		return Release{}, fmt.Errorf("pull %s/%s/%s: %w", channel, board, version, err)
	}
	return r, nil
}

// currentVersion reads the version the server's current directory holds
// from its signed version.txt.
func (m *Mirror) currentVersion(ctx context.Context, base string) (string, error) {
	u := base + "/" + currentName + "/version.txt"
	data, err := m.fetchSmall(ctx, u)
	if err != nil {
		return "", err
	}
	raw, err := m.fetchSmall(ctx, u+".sig")
	if err != nil {
		return "", err
	}
	sig, err := m.parseSignature(raw)
	if err == nil {
		err = m.check(bytes.NewReader(data), sig)
	}
	if err != nil {
		m.log.Warn("signature verification failed", "url", u, "err", err)
		return "", m.badSignature(u, err)
	}
	v, err := flatcarVersion(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", u, err)
	}
	return v, nil
}

func (m *Mirror) pull(ctx context.Context, channel, board, version, from string, progress func(Progress)) (Release, error) {
	log := m.log.With("channel", channel, "board", board, "version", version)
	dir := m.boardDir(channel, board)
	final := filepath.Join(dir, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Release{}, err
	}
	var staging string
	switch {
	case !isDir(final) || len(m.payloads) > 0:
		unlock, err := m.lock(ctx, filepath.Join(dir, ".partial-"+version+".lock"))
		if err != nil {
			return Release{}, err
		}
		defer unlock()
		// Another pull may have placed it while this one waited.
		if !isDir(final) {
			if staging, err = m.fetchAll(ctx, log, dir, board, version, from, progress); err != nil {
				return Release{}, err
			}
			break
		}
		// In place, perhaps without the payloads configured since.
		if _, err := m.fetchPayloads(ctx, log, final, m.updateBase(board, version), progress); err != nil {
			return Release{}, err
		}
	default:
		log.Debug("release already pulled")
	}

	unlock, err := m.lock(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return Release{}, err
	}
	defer unlock()
	cur, err := readCurrent(dir)
	if err != nil {
		return Release{}, err
	}
	if staging != "" {
		if err := os.Rename(staging, final); err != nil {
			return Release{}, fmt.Errorf("place verified release: %w", err)
		}
		if err := syncDir(dir); err != nil {
			return Release{}, err
		}
	}
	if !isDir(final) {
		return Release{}, fmt.Errorf("removed while being pulled: %w", matchbox.ErrNotFound)
	}
	if cur == "" || !isDir(filepath.Join(dir, cur)) || compareVersions(version, cur) > 0 {
		if err := setCurrent(dir, version); err != nil {
			return Release{}, err
		}
		log.Info("current release moved", "from", cur, "to", version)
		cur = version
	}
	return release(dir, channel, board, version, cur)
}

// fetchAll downloads and verifies every file of a release into its staging
// directory, keeping what an earlier attempt left there, and returns the
// staging directory.
func (m *Mirror) fetchAll(ctx context.Context, log *slog.Logger, dir, board, version, from string, progress func(Progress)) (string, error) {
	staging := filepath.Join(dir, ".partial-"+version)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	log.Info("pulling flatcar release", "from", from)
	var fetched int64
	for _, name := range releaseFiles {
		n, err := m.fetchFile(ctx, log, from+"/"+name, staging, name, progress)
		fetched += n
		if err != nil {
			return "", err
		}
		if name == "version.txt" {
			if err := checkVersionFile(filepath.Join(staging, name), version); err != nil {
				os.Remove(filepath.Join(staging, name))
				return "", fmt.Errorf("%s/%s: %w", from, name, err)
			}
		}
	}
	n, err := m.fetchPayloads(ctx, log, staging, m.updateBase(board, version), progress)
	fetched += n
	if err != nil {
		return "", err
	}
	if err := keepOnlyReleaseFiles(staging); err != nil {
		return "", err
	}
	if err := syncDir(staging); err != nil {
		return "", err
	}
	log.Info("pulled flatcar release", "bytes", fetched, "duration", time.Since(start).Round(time.Millisecond))
	return staging, nil
}

// keepOnlyReleaseFiles removes from a complete staging directory anything
// but the verified files, their signatures, and the verified payloads
// payloads.json lists, so that nothing else (leftovers of older attempts,
// stray files) is placed with the release.
func keepOnlyReleaseFiles(staging string) error {
	entries, err := os.ReadDir(staging)
	if err != nil {
		return err
	}
	payloads, err := readPayloads(staging)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".sig")
		verified := slices.Contains(releaseFiles, name) ||
			e.Name() == payloadsFile && len(payloads) > 0 ||
			slices.ContainsFunc(payloads, func(p Payload) bool { return p.Name == e.Name() })
		if verified && e.Type().IsRegular() {
			continue
		}
		if err := os.RemoveAll(filepath.Join(staging, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// checkVersionFile checks that a version.txt names the expected version.
func checkVersionFile(path, want string) error {
	data, err := readSmallFile(path)
	if err != nil {
		return err
	}
	got, err := flatcarVersion(data)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("names FLATCAR_VERSION %s, not %s", got, want)
	}
	return nil
}

// fetchFile downloads one file and its signature into staging, verifying
// the signature over the bytes as they are written, and returns how many
// bytes came over the network. The file is streamed to <name>.part,
// resumed from what an earlier attempt left, and renamed to <name> only
// once verified.
func (m *Mirror) fetchFile(ctx context.Context, log *slog.Logger, u, staging, name string, progress func(Progress)) (int64, error) {
	final := filepath.Join(staging, name)
	part := final + ".part"
	if size, ok := m.verifiedInStaging(log, final); ok {
		progress(Progress{File: name, Done: size, Total: size, Resumed: size})
		return 0, nil
	}

	raw, err := m.fetchSmall(ctx, u+".sig")
	if err != nil {
		return 0, err
	}
	sig, err := m.parseSignature(raw)
	if err != nil {
		log.Warn("signature verification failed", "file", name, "url", u, "err", err)
		os.Remove(part)
		return 0, m.badSignature(u, err)
	}

	start := time.Now()
	size, fetched, err := m.download(ctx, log, u, part, name, progress, func(r io.Reader, _ int64) error {
		if err := m.check(r, sig); err != nil {
			return m.badSignature(u, err)
		}
		return nil
	})
	if err != nil {
		return fetched, err
	}
	// The .sig goes first: a <name> without its .sig never exists.
	if err := writeFileSync(final+".sig", sig.raw); err != nil {
		return fetched, err
	}
	if err := os.Rename(part, final); err != nil {
		return fetched, err
	}
	log.Debug("file verified", "file", name, "bytes", size, "fetched", fetched, "duration", time.Since(start).Round(time.Millisecond))
	return fetched, nil
}

// download streams u into the file part, resuming after the bytes an
// earlier attempt left in it, and has verify read the whole file as it is
// written: the bytes already on disk, then the new ones (memory does not
// grow with the file). total is the file's size, -1 when the server does
// not say. A transfer that stops keeps part, to resume; a file verify
// refuses is deleted, and verify's error returned. On success part is
// complete and synced. It returns the file's size and how many bytes came
// over the network.
func (m *Mirror) download(ctx context.Context, log *slog.Logger, u, part, name string, progress func(Progress), verify func(r io.Reader, total int64) error) (size, fetched int64, err error) {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	offset, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, err
	}
	resp, offset, total, err := m.open(ctx, log, u, offset)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if offset == 0 {
		if err := f.Truncate(0); err != nil {
			return 0, 0, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, 0, err
		}
	} else {
		log.Info("resuming download", "file", name, "offset", offset, "total", total)
	}

	counted := &progressReader{r: resp.Body, p: Progress{File: name, Done: offset, Total: total, Resumed: offset}, report: progress}
	progress(counted.p)
	src := &sourceReader{r: io.MultiReader(io.NewSectionReader(f, 0, offset), io.TeeReader(counted, f))}
	verr := verify(src, total)
	progress(counted.p)
	size, fetched = counted.p.Done, counted.p.Done-offset

	switch {
	case src.err != nil:
		return size, fetched, fmt.Errorf("GET %s: stopped after %d of %s bytes (kept to resume): %w", u, size, sizeString(total), src.err)
	case src.eof && total >= 0 && size != total:
		return size, fetched, fmt.Errorf("GET %s: got %d of %d bytes (kept to resume)", u, size, total)
	case verr != nil && ctx.Err() != nil:
		return size, fetched, fmt.Errorf("GET %s: stopped after %d of %s bytes (kept to resume): %w", u, size, sizeString(total), context.Cause(ctx))
	case verr != nil:
		f.Close()
		os.Remove(part)
		log.Warn("verification failed; download deleted", "file", name, "url", u, "err", verr)
		return size, fetched, verr
	}
	if err := f.Sync(); err != nil {
		return size, fetched, err
	}
	return size, fetched, f.Close()
}

// verifiedInStaging reports whether an earlier attempt left the file and
// its signature in staging and they still verify (the key may have changed
// since). A file that does not verify is removed so it is fetched again.
func (m *Mirror) verifiedInStaging(log *slog.Logger, final string) (int64, bool) {
	f, err := os.Open(final)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	raw, err := readSmallFile(final + ".sig")
	if err == nil {
		var sig signature
		if sig, err = m.parseSignature(raw); err == nil {
			err = m.check(f, sig)
		}
	}
	if err != nil {
		log.Warn("file left by an earlier pull does not verify; fetching it again", "file", filepath.Base(final), "err", err)
		os.Remove(final)
		os.Remove(final + ".sig")
		return 0, false
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// open starts the download of u, asking for the bytes from offset on when
// offset > 0. It returns the response, the offset the body starts at (0
// when the server cannot resume and the file starts over) and the file's
// total size (-1 when unknown).
func (m *Mirror) open(ctx context.Context, log *slog.Logger, u string, offset int64) (*http.Response, int64, int64, error) {
	for {
		resp, err := m.get(ctx, u, offset)
		if err != nil {
			return nil, 0, 0, err
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			if offset > 0 {
				log.Info("server ignored the range request; starting the file over", "url", u)
			}
			return resp, 0, resp.ContentLength, nil
		case offset > 0 && resp.StatusCode == http.StatusPartialContent:
			start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
			if ok && start == offset {
				return resp, offset, total, nil
			}
			log.Info("server answered another range; starting the file over", "url", u, "content_range", resp.Header.Get("Content-Range"))
		case offset > 0 && resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
			log.Info("server cannot resume at the kept offset; starting the file over", "url", u, "offset", offset)
		default:
			resp.Body.Close()
			return nil, 0, 0, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		resp.Body.Close()
		offset = 0
	}
}

// fetchSmall downloads a small file (a signature, version.txt) into memory.
func (m *Mirror) fetchSmall(ctx context.Context, u string) ([]byte, error) {
	resp, err := m.get(ctx, u, 0)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSignatureSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(data) > maxSignatureSize {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, maxSignatureSize)
	}
	return data, nil
}

// get sends a GET for u, from offset on when offset > 0. The request is
// cancelled when no data arrives for stallTimeout.
func (m *Mirror) get(ctx context.Context, u string, offset int64) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	// Ask for the bytes as stored: a compressed transfer would not match
	// the signature and could not be resumed by offset.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "matchbox-release-mirror")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	timer := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	resp, err := m.client.Do(req)
	if err != nil {
		timer.Stop()
		cancel(nil)
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(context.Cause(ctx), errStalled) {
			err = fmt.Errorf("no response for %v: %w", stallTimeout, errStalled)
		}
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, ctx: ctx, cancel: cancel, timer: timer}
	return resp, nil
}

// watchedBody cancels its request when no data arrives for stallTimeout.
type watchedBody struct {
	io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(stallTimeout)
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(b.ctx), errStalled) {
		err = fmt.Errorf("no data for %v: %w", stallTimeout, errStalled)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*",
// returned as -1).
func parseContentRange(s string) (start, total int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, size, found := strings.Cut(spec, "/")
	if !found {
		return 0, 0, false
	}
	first, last, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	if size == "*" {
		return start, -1, true
	}
	total, err := strconv.ParseInt(size, 10, 64)
	if err != nil || total <= end {
		return 0, 0, false
	}
	return start, total, true
}

// progressReader counts the bytes read and reports progress at most every
// progressEvery.
type progressReader struct {
	r      io.Reader
	p      Progress
	report func(Progress)
	last   time.Time
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.Done += int64(n)
	if now := time.Now(); n > 0 && now.Sub(r.last) >= progressEvery {
		r.last = now
		r.report(r.p)
	}
	return n, err
}

// sourceReader records how reading the file ended, so a failed transfer
// (kept to resume) is told from a failed signature (discarded).
type sourceReader struct {
	r   io.Reader
	err error // the first read error other than io.EOF
	eof bool
}

func (r *sourceReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err == io.EOF {
		r.eof = true
	} else if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

func sizeString(n int64) string {
	if n < 0 {
		return "unknown"
	}
	return strconv.FormatInt(n, 10)
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// readSmallFile reads a file of at most maxSignatureSize bytes.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSignatureSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSignatureSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxSignatureSize)
	}
	return data, nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes renames and new entries in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
