// Package storage holds matchbox's stores.
//
// DB is the store of everything the server writes: the groups, profiles
// and templates created through the admin API (with ETags for
// conditional writes), API tokens and revocations, the machine inventory
// and event histories, DHCP leases, reinstall workflows and BMC settings
// (sealed with a SecretKey kept outside the database). Its methods make
// up Store, the contract composed of the consumers' interfaces declared
// in the core (matchbox.ObjectStore, TokenStore, InventoryStore,
// EventStore, LeaseStore, WorkflowStore, BMCStore, ChangeFeed).
//
// DB's logic is written once, over a small key/value layer (kv.go:
// buckets of sorted keys, atomic write transactions) with two backends:
// bbolt, the embedded database file of a single server (OpenBolt, which
// also migrates older layouts), and memory (NewMemoryBackend, OpenMemory,
// NewMemory), the reference store for tests, over which several DBs
// stand for replicas sharing one database.
//
// Every committed write is reported on the change feed (DB.Changes): a
// Change per key written, in commit order, to each subscriber of its
// kind, so that state derived from the store follows writes made by
// another DB over the same backend. A subscriber that falls behind is
// not waited for; it is told to reload the kinds it missed.
//
// DataDir is the other source of objects: it reads poseidon/matchbox's
// directory layout into memory and reloads it when files change; it is
// read-only.
//
// Every store passes the conformance suite in storagetest.
package storage
