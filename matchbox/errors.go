package matchbox

import "errors"

// ErrNotFound is returned (wrapped) when a group, profile, template or
// machine does not exist, or when no group matches a machine.
var ErrNotFound = errors.New("not found")

// ErrInvalid is returned (wrapped) for malformed input such as a MAC label
// that is not a MAC address or an object that fails validation.
var ErrInvalid = errors.New("invalid")

// ErrConflict is returned (wrapped) when a write conflicts with what
// exists: an id already taken, an object that is read-only here.
var ErrConflict = errors.New("conflict")

// ErrPrecondition is returned (wrapped) when a conditional write finds the
// object changed since the writer read it (an If-Match that no longer
// matches).
var ErrPrecondition = errors.New("precondition failed")

// ErrUnavailable is returned (wrapped) when the server withholds an answer
// it cannot give safely yet, such as a group for a machine that a group
// file which does not load may select. Boot endpoints answer 503.
var ErrUnavailable = errors.New("unavailable")

// ErrForbidden is returned (wrapped) when a request is refused for who
// sent it, such as a config asked for by an address that does not hold
// the machine's DHCP lease. Boot endpoints answer 403.
var ErrForbidden = errors.New("forbidden")
