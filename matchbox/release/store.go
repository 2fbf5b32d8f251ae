package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"matchbox.dev/matchbox"
)

// Resolve returns the version a request for channel/board/version is
// served from: for "current" (or "") the version the current link names,
// for X.Y.Z the version itself when it is in the mirror. Otherwise the
// error wraps matchbox.ErrNotFound. It costs one readlink or stat, for
// use on every boot request.
func (m *Mirror) Resolve(channel, board, version string) (string, error) {
	if err := checkChannel(channel); err != nil {
		return "", err
	}
	if err := checkBoard(board); err != nil {
		return "", err
	}
	dir := m.boardDir(channel, board)
	if version == "" || version == currentName {
		cur, err := readCurrent(dir)
		if err != nil {
			return "", err
		}
		if cur == "" {
			return "", fmt.Errorf("flatcar %s/%s has no current release: %w", channel, board, matchbox.ErrNotFound)
		}
		return cur, nil
	}
	if err := checkVersion(version); err != nil {
		return "", err
	}
	if !isDir(filepath.Join(dir, version)) {
		return "", fmt.Errorf("flatcar %s/%s/%s: %w", channel, board, version, matchbox.ErrNotFound)
	}
	return version, nil
}

// List returns every release in the mirror, sorted by channel, board and
// version, newest version first. Downloads in progress are not listed.
func (m *Mirror) List() ([]Release, error) {
	var out []Release
	for _, channel := range channels {
		for _, b := range boards {
			board := b.board
			dir := m.boardDir(channel, board)
			versions, err := listVersions(dir)
			if err != nil {
				return nil, err
			}
			if len(versions) == 0 {
				continue
			}
			cur, err := readCurrent(dir)
			if err != nil {
				m.log.Warn("cannot read the current link; listing no release as current", "err", err)
			}
			for _, v := range versions {
				r, err := release(dir, channel, board, v, cur)
				if errors.Is(err, matchbox.ErrNotFound) {
					continue // removed while listing
				}
				if err != nil {
					return nil, err
				}
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// Remove deletes a release. When the current link names it, current moves
// to the newest remaining release, or is removed when none remains. The
// error wraps matchbox.ErrNotFound when the release is not in the mirror.
func (m *Mirror) Remove(channel, board, version string) error {
	if err := checkRelease(channel, board, version); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	dir := m.boardDir(channel, board)
	if !isDir(filepath.Join(dir, version)) {
		return fmt.Errorf("remove flatcar %s/%s/%s: %w", channel, board, version, matchbox.ErrNotFound)
	}
	unlock, err := m.lock(context.Background(), filepath.Join(dir, ".lock"))
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	defer unlock()
	if err := m.remove(dir, version); err != nil {
		return fmt.Errorf("remove flatcar %s/%s/%s: %w", channel, board, version, err)
	}
	return nil
}

// Prune removes all releases of a board but the newest keep ones and the
// one the current link names, and returns the removed versions, newest
// first.
func (m *Mirror) Prune(channel, board string, keep int) ([]string, error) {
	if err := checkChannel(channel); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	if err := checkBoard(board); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	if keep < 0 {
		return nil, fmt.Errorf("prune: keep %d: %w", keep, matchbox.ErrInvalid)
	}
	dir := m.boardDir(channel, board)
	if !isDir(dir) {
		return nil, nil
	}
	unlock, err := m.lock(context.Background(), filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	defer unlock()
	versions, err := listVersions(dir)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	cur, err := readCurrent(dir)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var removed []string
	for i, v := range versions {
		if i < keep || v == cur {
			continue
		}
		if err := m.remove(dir, v); err != nil {
			return removed, fmt.Errorf("prune flatcar %s/%s: %s: %w", channel, board, v, err)
		}
		removed = append(removed, v)
	}
	return removed, nil
}

// remove deletes a version directory, first moving the current link away
// from it, so current never names a missing release. The caller holds the
// board lock.
func (m *Mirror) remove(dir, version string) error {
	target := filepath.Join(dir, version)
	if !isDir(target) {
		return matchbox.ErrNotFound
	}
	cur, err := readCurrent(dir)
	if err != nil {
		return err
	}
	if cur == version {
		versions, err := listVersions(dir)
		if err != nil {
			return err
		}
		next := ""
		for _, v := range versions {
			if v != version {
				next = v
				break
			}
		}
		if next != "" {
			err = setCurrent(dir, next)
		} else {
			err = os.Remove(filepath.Join(dir, currentName))
		}
		if err != nil {
			return err
		}
		m.log.Info("current release moved", "dir", dir, "from", version, "to", next)
	}
	// Renaming to a dot name first takes the release out of service at
	// once; deleting a large tree is not atomic.
	trash := filepath.Join(dir, ".removing-"+version)
	if err := os.RemoveAll(trash); err != nil {
		return err
	}
	if err := os.Rename(target, trash); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	m.log.Info("release removed", "dir", dir, "version", version)
	return os.RemoveAll(trash)
}

func checkRelease(channel, board, version string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	if err := checkBoard(board); err != nil {
		return err
	}
	return checkVersion(version)
}

// listVersions returns the version directories of a board, newest first.
// Dot entries (staging, locks) and the current link are not versions.
func listVersions(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() && checkVersion(e.Name()) == nil {
			versions = append(versions, e.Name())
		}
	}
	slices.SortFunc(versions, func(a, b string) int { return compareVersions(b, a) })
	return versions, nil
}

// readCurrent returns the version the board's current link names, "" when
// there is no link.
func readCurrent(dir string) (string, error) {
	link := filepath.Join(dir, currentName)
	target, err := os.Readlink(link)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if errors.Is(err, unix.EINVAL) {
		return "", fmt.Errorf("%s is not a symlink; move it away: %w", link, matchbox.ErrConflict)
	}
	if err != nil {
		return "", err
	}
	if checkVersion(target) != nil {
		return "", fmt.Errorf("%s points to %q, not to a version directory beside it; move it away: %w", link, target, matchbox.ErrConflict)
	}
	return target, nil
}

// setCurrent points the board's current link at version, atomically: a
// new link under a temporary name renamed over the old one.
func setCurrent(dir, version string) error {
	tmp := filepath.Join(dir, ".current-new")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Symlink(version, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, currentName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace current link: %w", err)
	}
	return syncDir(dir)
}
