// Package storagepb holds the objects of poseidon/matchbox's gRPC API
// (Group, Profile, NetBoot), generated from storage.proto by
// scripts/gen-proto.
package storagepb
