// Package http is matchbox's machine-facing HTTP front-end: the
// poseidon/matchbox-compatible boot endpoints (/boot.ipxe, /ipxe, /grub,
// /ignition, /cloud, /generic, /metadata), their signed .sig/.asc
// variants, static assets, health checks and Prometheus metrics.
//
// Each request becomes the core's question, asked of matchbox.Booter
// (what do these labels get, reinstall included?), then is rendered by
// package render. Errors become
// HTTP answers in exactly one place, Server.fail: 400 for a malformed
// query, 404 when nothing matches, 500 with a short reason when rendering
// fails, 405 for methods other than GET and HEAD.
package http
