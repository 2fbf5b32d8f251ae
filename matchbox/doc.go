// Package matchbox is the core of the matchbox network-boot server: the
// domain and the one decision every front-end asks of it. It holds
//
//   - the plain-Go domain types: Group, Profile, Template, Machine and its
//     Events, Lease, Token, BMC settings, and a reinstall's Workflow and
//     Gate;
//   - selection: the Catalog, an immutable, indexed Snapshot of every
//     group, profile and template from all sources (the data dir and the
//     database), and the rules that pick a machine's group and profile;
//   - the contracts of what is kept: the small store interfaces each
//     consumer declares (WorkflowStore, EventStore, LeaseStore, ...), which
//     storage.Store composes;
//   - the checks every entry point shares: names and values (CheckName),
//     MACs (NormalizeMAC), the error kinds (ErrNotFound, ErrInvalid, ...),
//     redaction of secrets and quoting of what came from the network.
//
// What runs over time lives beside it: matchbox/recorder (machine events),
// matchbox/power (BMC operations), matchbox/reinstall (reinstall
// workflows). Every front-end (HTTP, TFTP, DHCP, the admin API) turns its
// request into the same question, "this machine with these labels asks to
// boot: what does it get?", and answers it through the catalog. The core
// imports only the standard library.
package matchbox
