package storage

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"matchbox.dev/matchbox"
)

// Store is what matchbox keeps in its database: the objects written
// through the admin API, API tokens, the machine inventory and its event
// histories, DHCP leases, reinstall workflows and BMC settings, with a
// feed of the changes. *DB implements it over bbolt (OpenBolt) and over
// memory (OpenMemory); every implementation passes the conformance suite
// in storagetest.
type Store interface {
	matchbox.ObjectStore
	matchbox.TokenStore
	matchbox.InventoryStore
	matchbox.EventStore
	matchbox.LeaseStore
	matchbox.WorkflowStore
	matchbox.BMCStore
	matchbox.RecordStore
	matchbox.ChangeFeed
	// SetSecretKey gives the store the key that seals BMC passwords;
	// without one, storing or reading BMC settings fails.
	SetSecretKey(key *SecretKey)
	Close() error
}

var _ Store = (*DB)(nil)

// The buckets of the layout, present in every backend.
var (
	bucketGroups    = []byte("groups")
	bucketProfiles  = []byte("profiles")
	bucketTemplates = []byte("templates")
	bucketMachines  = []byte("machines")
	// bucketHistory holds every machine's events in one flat bucket, keyed
	// by the MAC (lowercase colon form) followed by the machine's 8-byte
	// event sequence number, so a machine's history is one prefix range.
	bucketHistory   = []byte("history")
	bucketLeases    = []byte("leases")         // keyed by the 4-byte address
	bucketTokens    = []byte("tokens")         // keyed by token name
	bucketRevoked   = []byte("tokens_revoked") // keyed by the revoked secret's hash
	bucketBMC       = []byte("bmc")            // keyed by MAC, sealed
	bucketWorkflows = []byte("workflows")      // keyed by MAC
	// bucketRecords holds the records of RecordStore, keyed by kind, a
	// zero byte, and key.
	bucketRecords = []byte("records")

	storeBuckets = [][]byte{bucketGroups, bucketProfiles, bucketTemplates, bucketMachines, bucketHistory,
		bucketLeases, bucketTokens, bucketRevoked, bucketBMC, bucketWorkflows, bucketRecords}
)

// DB is the store (see Store), over one of the key/value backends: a
// bbolt file (OpenBolt) or memory (OpenMemory). Each write is one
// transaction, committed before the call returns (on bbolt: synced to
// disk, so an acknowledged write survives a crash), and then reported on
// the change feed.
type DB struct {
	kv    kvBackend
	state *backendState
	// inventory bounds the machine records events create.
	inventory inventory
	key       atomic.Pointer[SecretKey]
	// objects is what Objects decoded (objects.go).
	objects objectCache

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: ends the change feeds
}

// backendState is what every store over one backend shares besides the
// data: the change feed and the number of machine records.
type backendState struct {
	feed     feed
	machines atomic.Int64
}

func newDB(kv kvBackend, state *backendState) *DB {
	db := &DB{kv: kv, state: state, closed: make(chan struct{})}
	db.objects.seed = maphash.MakeSeed()
	db.inventory.count = &state.machines
	return db
}

// SetSecretKey gives the store the key that seals BMC passwords.
func (db *DB) SetSecretKey(key *SecretKey) { db.key.Store(key) }

// Close closes the store and ends its change feeds.
func (db *DB) Close() error {
	err := db.kv.Close()
	db.closeOnce.Do(func() { close(db.closed) })
	return err
}
