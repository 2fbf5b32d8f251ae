package matchbox

import (
	"strings"
	"testing"
)

// A client certificate's role comes from its OUs by one rule that fails
// closed: only the role names (in any case) grant anything, an OU naming
// no role refuses the certificate, both roles give read, and no OU needs
// a default role.
func TestCertificateRole(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ous     []string
		noOU    Role
		want    Role
		refused string // in the error when refused
	}{
		{"read", []string{"read"}, "", RoleRead, ""},
		{"Read", []string{"Read"}, "", RoleRead, ""},
		{"READ", []string{"READ"}, RoleAdmin, RoleRead, ""},
		{"admin", []string{"admin"}, "", RoleAdmin, ""},
		{"Admin", []string{"Admin"}, "", RoleAdmin, ""},
		{"readonly", []string{"readonly"}, RoleAdmin, "", `OU="readonly" names no role`},
		{"read with a space", []string{"read "}, "", "", `OU="read " names no role`},
		{"empty OU", []string{""}, RoleAdmin, "", `OU="" names no role`},
		{"department and role", []string{"Engineering", "read"}, "", "", `OU="Engineering"`},
		{"read and admin", []string{"read", "admin"}, "", RoleRead, ""},
		{"admin and read", []string{"admin", "Read"}, "", RoleRead, ""},
		{"admin twice", []string{"admin", "ADMIN"}, "", RoleAdmin, ""},
		{"no OU, refused", nil, "", "", "no organizational unit"},
		{"no OU, default read", nil, RoleRead, RoleRead, ""},
		{"no OU, default admin", []string{}, RoleAdmin, RoleAdmin, ""},
		{"no OU, bad default", nil, "root", "", `default role "root"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CertificateRole(tc.ous, tc.noOU)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) || got != "" {
					t.Errorf("CertificateRole(%q, %q) = %q, %v; want refused (%s)", tc.ous, tc.noOU, got, err, tc.refused)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("CertificateRole(%q, %q) = %q, %v; want %q", tc.ous, tc.noOU, got, err, tc.want)
			}
		})
	}
	// An OU from a certificate is quoted and cut in the reason.
	_, err := CertificateRole([]string{strings.Repeat("x", 500) + "\n"}, "")
	if err == nil || len(err.Error()) > 200 || strings.Contains(err.Error(), "\n") {
		t.Errorf("long OU: %v", err)
	}
}
