package matchbox

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what an API token may do.
type Role string

// The API roles: read may read everything (never secrets), admin may also
// write.
const (
	RoleRead  Role = "read"
	RoleAdmin Role = "admin"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleRead || r == RoleAdmin }

// Token is an API token as stored: only a hash of the secret is kept.
type Token struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Hash    string    `json:"hash"` // hex SHA-256 of the secret
	Created time.Time `json:"created"`
}

// RevokedToken is what the store keeps of a revoked (or replaced) token:
// the hash of its secret, so that the secret is never accepted again, not
// from a token file read at the next start nor as a new token.
type RevokedToken struct {
	Name    string    `json:"name"`
	Hash    string    `json:"hash"`
	Revoked time.Time `json:"revoked"`
}

// CertificateRole is the role of a verified client certificate, decided
// from the organizational units (OU) of its subject; every listener that
// accepts client certificates asks it, so they all follow one rule:
//
//   - an OU is a role name, compared without regard to case (OU=Read and
//     OU=READ mean read, OU=Admin means admin);
//   - an OU that names no role (OU=readonly, OU=ops, OU="read ") refuses
//     the certificate: a misspelt role must not grant anything;
//   - OUs naming both roles give the lesser, read;
//   - a certificate without any OU gets noOU, and is refused when noOU is
//     empty.
//
// The error says why a certificate is refused.
func CertificateRole(ous []string, noOU Role) (Role, error) {
	if len(ous) == 0 {
		if noOU == "" {
			return "", errors.New("the certificate has no organizational unit (OU) naming its role (OU=read or OU=admin), and no default role is set for such certificates")
		}
		if !noOU.Valid() {
			return "", fmt.Errorf("default role %q of certificates without an OU: want read or admin", noOU)
		}
		return noOU, nil
	}
	role := RoleAdmin
	for _, ou := range ous {
		switch {
		case strings.EqualFold(ou, string(RoleRead)):
			role = RoleRead
		case strings.EqualFold(ou, string(RoleAdmin)):
		default:
			return "", fmt.Errorf("the certificate's organizational unit OU=%s names no role (want read or admin)", Quote(ou))
		}
	}
	return role, nil
}

// Condition makes a write conditional on the version the writer read.
type Condition struct {
	// IfMatch, when set, is the ETag the object must still have ("*":
	// the object must exist).
	IfMatch string
	// IfNoneMatch requires that the object does not exist yet (create
	// only).
	IfNoneMatch bool
}
