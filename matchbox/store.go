package matchbox

import "context"

// What a store holds, in the small interfaces its consumers take. A store
// (package storage) implements all of them; each consumer asks only for
// what it uses. The event, lease, workflow and BMC-settings interfaces
// of the recorder, the DHCP server and the reinstall engine are declared
// beside them (EventStore, LeaseStore, WorkflowStore, BMCSettingsStore,
// MachineStore).

// ObjectStore holds the groups, profiles and templates written through the
// admin API. Each object has an ETag (its version); a write or delete can
// be made conditional on it (see Condition) and fails with
// ErrPrecondition, writing nothing, when the condition does not hold.
type ObjectStore interface {
	// Objects returns every stored group, profile and template, for the
	// catalog.
	Objects(ctx context.Context) (Objects, error)
	GroupVersion(ctx context.Context, id string) (*Group, string, error)
	PutGroupIf(ctx context.Context, g *Group, cond Condition) (string, error)
	DeleteGroupIf(ctx context.Context, id string, cond Condition) error
	ProfileVersion(ctx context.Context, id string) (*Profile, string, error)
	PutProfileIf(ctx context.Context, p *Profile, cond Condition) (string, error)
	DeleteProfileIf(ctx context.Context, id string, cond Condition) error
	TemplateVersion(ctx context.Context, kind TemplateKind, name string) (*Template, string, error)
	PutTemplateIf(ctx context.Context, t *Template, cond Condition) (string, error)
	DeleteTemplateIf(ctx context.Context, kind TemplateKind, name string, cond Condition) error
}

// TokenStore holds the admin API's tokens and what is kept of revoked
// ones: a revoked secret is never accepted again.
type TokenStore interface {
	// CreateToken stores a new token; a name taken or a secret revoked
	// before is ErrConflict.
	CreateToken(ctx context.Context, t Token) error
	// DeleteToken revokes a token by name, keeping its secret's hash.
	DeleteToken(ctx context.Context, name string) error
	Tokens(ctx context.Context) ([]Token, error)
	// RevokedToken returns the revocation of the secret with hash, or
	// ErrNotFound.
	RevokedToken(ctx context.Context, hash string) (RevokedToken, error)
}

// InventoryStore holds the machine records (created by the events of
// machines that boot, see EventStore) and their event histories.
type InventoryStore interface {
	GetMachine(ctx context.Context, mac string) (*Machine, error)
	// MachinePage returns up to limit machines (0: all) with a MAC after
	// after, in MAC order, that keep passes (nil: all), and whether more
	// follow.
	MachinePage(ctx context.Context, after string, limit int, keep func(*Machine) bool) ([]*Machine, bool, error)
	// MachineEvents returns a machine's recorded events, oldest first.
	MachineEvents(ctx context.Context, mac string) ([]Event, error)
	SetMachineLabels(ctx context.Context, mac string, labels map[string]string) (*Machine, error)
	// DeleteMachine deletes a machine with its history, BMC settings and
	// workflow.
	DeleteMachine(ctx context.Context, mac string) error
	// ReservedIP returns the address reserved on a machine's record (""
	// for none).
	ReservedIP(ctx context.Context, mac string) (string, error)
	// MachineCount is the number of machine records.
	MachineCount() int
	// SetMaxMachines bounds the machine records events create (0: no
	// bound).
	SetMaxMachines(n int)
}

// BMCStore holds machines' BMC settings, passwords included; the store
// keeps the passwords sealed.
type BMCStore interface {
	SetMachineBMC(ctx context.Context, mac string, b BMC) error
	MachineBMC(ctx context.Context, mac string) (BMC, error)
	DeleteMachineBMC(ctx context.Context, mac string) error
}

// RecordStore keeps the records of engines that own their schema (the
// update service's groups, rollouts and machines' update states): opaque
// values, by kind and key. UpdateRecords changes several at once,
// atomically; that is how a grant and the budget it spends are committed
// together, so that two machines asking at the same moment never exceed
// a limit, on one server or several sharing the store.
type RecordStore interface {
	// Record returns one record, or ErrNotFound.
	Record(ctx context.Context, kind, key string) ([]byte, error)
	// Records returns every record of a kind, in key order.
	Records(ctx context.Context, kind string) ([]Record, error)
	// UpdateRecords reads the records named (nil: absent), calls fn with
	// their values, and writes what fn returns in their place (nil:
	// delete), all in one transaction: nothing is written when fn fails.
	// fn may be called more than once (when the transaction is retried)
	// and must not act on anything else.
	UpdateRecords(ctx context.Context, keys []RecordKey, fn func(values [][]byte) ([][]byte, error)) error
}

// RecordKey names a record.
type RecordKey struct{ Kind, Key string }

// Record is one record and its key.
type Record struct {
	Key   string
	Value []byte
}

// MaxRecord bounds a record's value.
const MaxRecord = 1 << 20

// ChangeKind names what a Change is about.
type ChangeKind string

// The kinds of change a store reports. The Key of a change is the id of
// the group or profile, "kind/name" of a template, the name of a token
// (created or revoked), the MAC address (lowercase, colons) of a machine
// record or history, workflow or BMC settings, and the address of a
// lease.
const (
	ChangeGroup    ChangeKind = "group"
	ChangeProfile  ChangeKind = "profile"
	ChangeTemplate ChangeKind = "template"
	ChangeToken    ChangeKind = "token"
	ChangeMachine  ChangeKind = "machine"
	ChangeWorkflow ChangeKind = "workflow"
	ChangeLease    ChangeKind = "lease"
	ChangeBMC      ChangeKind = "bmc"
	// ChangeRecord is a change of a record (RecordStore); its Key is
	// "kind/key".
	ChangeRecord ChangeKind = "record"
)

// Change says that something stored may have changed: the subscriber
// reads it again. An empty Key means that anything of the kind may have
// changed (the subscriber fell behind and changes were dropped): it
// reloads all of that kind.
type Change struct {
	Kind ChangeKind
	Key  string
	// Local is set when the change was written through the store the
	// subscriber subscribed on (this process, of several sharing the
	// data): a subscriber that applies its own writes as it makes them
	// skips these. A reload after falling behind is never Local.
	Local bool
}

// ChangeFeed reports committed writes, by whichever process wrote them
// when the store is shared.
type ChangeFeed interface {
	// Changes returns a channel of the changes of the given kinds (none:
	// every kind) committed from now on, in commit order, one per key
	// written. State derived from the store subscribes first, then
	// loads, then applies what arrives. The channel is closed when ctx
	// ends or the store is closed. Writers never wait for a subscriber:
	// one that falls behind receives, once it has caught up, a Change
	// with an empty Key for each kind it missed.
	Changes(ctx context.Context, kinds ...ChangeKind) <-chan Change
}
