// Package netlimit bounds what the clients of one HTTP listener can hold
// of the process, so that one host, or a few, cannot deny service to the
// others or run the process out of memory or file descriptors:
//
//   - open connections, in all and per source address: a connection over
//     either limit is closed as soon as it is accepted (Limits.Listener);
//   - requests whose bodies are being read at once: beyond the limit a
//     request with a body gets 503 without its body being read
//     (Limits.Handler);
//   - the time to read one request, headers and body, and the size of its
//     header (Limits.Server);
//   - responses that stop moving: a write that makes no progress for the
//     stall timeout fails and the connection is dropped, while a slow but
//     moving transfer, however long, completes. Files keep being sent with
//     sendfile.
//
// Each limit hit is counted in a metric and logged through a line limiter.
// The package imports only the standard library and prometheus.
package netlimit
