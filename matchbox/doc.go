// Package matchbox is the core of the matchbox network-boot server.
//
// It holds the plain-Go domain types (Group, Profile, Template, Machine),
// the selection rules that decide which group and profile a machine gets,
// and the Catalog: an immutable, indexed snapshot of every group, profile
// and template from all sources (the data dir and the embedded database).
//
// Every front-end (HTTP, TFTP, DHCP, the admin API) turns its request into
// the same question, "this machine with these labels asks to boot: what
// does it get?", and answers it through Catalog.Select. The core imports
// only the standard library.
package matchbox
