package storage

import (
	"path/filepath"
	"testing"
)

func TestRelPath(t *testing.T) {
	for _, tt := range []struct{ root, path, want string }{
		{"/var/lib/matchbox", "/var/lib/matchbox/groups/a.json", "groups/a.json"},
		{"/var/lib/matchbox/", "/var/lib/matchbox/groups/a.json", "groups/a.json"},
		{"./data", "data/groups/a.json", "groups/a.json"},
		{".", "groups/a.json", "groups/a.json"},
		{"/", "/groups/a.json", "groups/a.json"},
		{"/srv/m", "/srv/mx/groups/a.json", "../mx/groups/a.json"},
	} {
		got := relPath(tt.root, tt.path)
		if got != tt.want {
			t.Errorf("relPath(%q, %q) = %q, want %q", tt.root, tt.path, got, tt.want)
		}
		if want, _ := filepath.Rel(tt.root, tt.path); got != want {
			t.Errorf("relPath(%q, %q) = %q, filepath.Rel says %q", tt.root, tt.path, got, want)
		}
	}
}
