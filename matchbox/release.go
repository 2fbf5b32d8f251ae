package matchbox

import (
	"fmt"
	"slices"
	"strings"
)

// ReleaseRef names a Flatcar release: a channel, and a version or
// "current" (the newest one pulled and verified).
type ReleaseRef struct {
	Channel string `json:"channel"`
	// Version is X.Y.Z or "current" (the default).
	Version string `json:"version,omitempty"`
	// Arch is amd64 (the default) or arm64.
	Arch string `json:"arch,omitempty"`
}

// ReleaseChannels are Flatcar's release channels.
var ReleaseChannels = []string{"stable", "beta", "alpha", "lts"}

// releaseBoards maps architectures to Flatcar's board names.
var releaseBoards = map[string]string{"amd64": "amd64-usr", "arm64": "arm64-usr"}

// Board returns the release's board (amd64-usr, arm64-usr), empty for an
// unknown architecture.
func (r ReleaseRef) Board() string {
	if r.Arch == "" {
		return releaseBoards["amd64"]
	}
	return releaseBoards[r.Arch]
}

// VersionOrCurrent returns the version, "current" when none is pinned.
func (r ReleaseRef) VersionOrCurrent() string {
	if r.Version == "" {
		return "current"
	}
	return r.Version
}

// Check reports what is wrong with the reference, if anything.
func (r ReleaseRef) Check() error {
	if !slices.Contains(ReleaseChannels, r.Channel) {
		return fmt.Errorf("release channel %q: want one of %s: %w", r.Channel, strings.Join(ReleaseChannels, ", "), ErrInvalid)
	}
	if r.Board() == "" {
		return fmt.Errorf("release arch %q: want amd64 or arm64: %w", r.Arch, ErrInvalid)
	}
	if v := r.VersionOrCurrent(); v != "current" {
		for part := range strings.SplitSeq(v, ".") {
			if part == "" || strings.Trim(part, "0123456789") != "" {
				return fmt.Errorf("release version %q: want X.Y.Z or current: %w", v, ErrInvalid)
			}
		}
	}
	return nil
}

// ReleaseResolver knows which release versions are mirrored locally.
type ReleaseResolver interface {
	// Resolve returns the version a channel's board and version (or
	// "current") name in the local mirror; ErrNotFound when not there.
	Resolve(channel, board, version string) (string, error)
}
