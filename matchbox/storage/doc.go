// Package storage holds matchbox's stores: the embedded bbolt database (the
// default, for objects created through the API, machines and leases) and
// the data-dir loader that reads poseidon/matchbox's directory layout into
// memory and reloads it when files change. Every store passes the
// conformance suite in storagetest.
package storage
