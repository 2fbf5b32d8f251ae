// Package serverpb holds the requests and answers of poseidon/matchbox's
// gRPC API, generated from messages.proto by scripts/gen-proto.
package serverpb
