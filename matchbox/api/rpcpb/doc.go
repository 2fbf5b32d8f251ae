// Package rpcpb holds the services of poseidon/matchbox's gRPC API
// (Groups, Profiles, Ignition, Generic, Select), generated from rpc.proto
// by scripts/gen-proto.
package rpcpb
