package matchbox

import "time"

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

// Condition makes a write conditional on the version the writer read.
type Condition struct {
	// IfMatch, when set, is the ETag the object must still have ("*":
	// the object must exist).
	IfMatch string
	// IfNoneMatch requires that the object does not exist yet (create
	// only).
	IfNoneMatch bool
}
