// Package storagetest is the conformance suite every matchbox store passes.
//
// Run takes a Harness that opens the store under test (and, where the
// backend allows, reopens it as after a restart, opens a replica over the
// same storage, and reads the raw storage). It covers every method of
// storage.Store: conditional writes of groups, profiles and templates,
// tokens and revocations, the machine inventory and its bounds, event
// histories, leases, reinstall workflows, sealed BMC settings, what
// survives a restart, racing writers of one conditional write (exactly
// one wins) and the change feed (delivery, kinds, order, overflow, close,
// replicas).
//
// RunSource runs the read cases alone, for read-only sources such as the
// data dir: what objects read back as, byte for byte.
package storagetest
