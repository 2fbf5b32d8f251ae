package matchbox

import (
	"context"
	"time"
)

// EventKind names a step of a machine's boot (or later, its lifecycle).
type EventKind string

// Boot steps recorded on machines.
const (
	EventDHCPDiscover EventKind = "dhcp.discover"
	EventDHCPOffer    EventKind = "dhcp.offer"
	EventDHCPAck      EventKind = "dhcp.ack"
	EventDHCPNak      EventKind = "dhcp.nak"
	EventDHCPDecline  EventKind = "dhcp.decline"
	EventDHCPRelease  EventKind = "dhcp.release"
	EventDHCPInform   EventKind = "dhcp.inform"
	EventPXEOffer     EventKind = "pxe.offer"
	EventTFTPSent     EventKind = "tftp.sent"
	EventTFTPFailed   EventKind = "tftp.failed"
	EventHTTPServed   EventKind = "http.served"
	EventHTTPFailed   EventKind = "http.failed"
	EventAssetServed  EventKind = "http.asset"
)

// Update steps recorded on machines (the update service's, for machines
// its clients are linked to).
const (
	// EventUpdateVersion: the machine reported running another version
	// than before (or for the first time).
	EventUpdateVersion     EventKind = "update.version"
	EventUpdateGranted     EventKind = "update.granted"
	EventUpdateHeld        EventKind = "update.held"
	EventUpdateDownloading EventKind = "update.downloading"
	EventUpdateDownloaded  EventKind = "update.downloaded"
	EventUpdateInstalled   EventKind = "update.installed"
	EventUpdateComplete    EventKind = "update.complete"
	EventUpdateFailed      EventKind = "update.failed"
)

// Event is one recorded step of a machine.
type Event struct {
	Time time.Time `json:"time"`
	MAC  string    `json:"mac"`
	Kind EventKind `json:"kind"`
	// Arch is the client architecture (DHCP option 93 name, or iPXE's
	// buildarch).
	Arch    string `json:"arch,omitempty"`
	IP      string `json:"ip,omitempty"`
	UUID    string `json:"uuid,omitempty"`
	File    string `json:"file,omitempty"`
	Group   string `json:"group,omitempty"`
	Profile string `json:"profile,omitempty"`
	// Detail is a short human-readable note (mode, status, error).
	Detail string `json:"detail,omitempty"`
	// Claimed marks an event whose MAC is only the client's word: an
	// HTTP request naming a MAC that no DHCP lease confirms. A claimed
	// event is added to the history of a machine in the inventory but
	// never adds a machine, and does not teach the recorder an address.
	// Not stored.
	Claimed bool `json:"-"`
}

// NotRecorded counts the events a store did not record because their
// machine is not in the inventory and may not enter it.
type NotRecorded struct {
	// Unconfirmed events are claimed (Event.Claimed).
	Unconfirmed int
	// Full events came when the inventory held its maximum of machines.
	Full int
}

// EventStore persists events and the machine records they update, in
// batches, keeping at most a bounded number of events per machine. It
// returns what it did not record of events for machines it has no record
// of (claimed ones, and all once it holds its maximum of machines).
type EventStore interface {
	RecordEvents(ctx context.Context, events []Event) (NotRecorded, error)
}

// Failed reports whether events of kind k are failures.
func (k EventKind) Failed() bool {
	switch k {
	case EventHTTPFailed, EventTFTPFailed, EventDHCPNak, EventDHCPDecline, EventUpdateFailed:
		return true
	}
	return false
}
