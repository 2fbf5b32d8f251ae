package storage

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
)

var (
	bucketEvents = []byte("events") // one nested bucket per MAC, keyed by sequence
	bucketLeases = []byte("leases") // keyed by the 4-byte address
)

// MaxEventsPerMachine bounds the event history kept per machine; older
// events are dropped.
const MaxEventsPerMachine = 200

// RecordEvents appends events to their machines' histories and updates the
// machine records (first/last seen, last IP, arch, UUID, group, profile),
// creating records on first contact, in one transaction.
func (b *Bolt) RecordEvents(_ context.Context, events []matchbox.Event) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		machines := tx.Bucket(bucketMachines)
		evs := tx.Bucket(bucketEvents)
		seen := make(map[string]*matchbox.Machine)
		for _, e := range events {
			mac, err := matchbox.NormalizeMAC(e.MAC)
			if err != nil {
				continue
			}
			e.MAC = mac
			m, ok := seen[mac]
			if !ok {
				m = &matchbox.Machine{MAC: mac}
				if data := machines.Get([]byte(mac)); data != nil {
					if err := json.Unmarshal(data, m); err != nil {
						return fmt.Errorf("decode machine %s: %w", mac, err)
					}
				}
				seen[mac] = m
			}
			applyEvent(m, e)
			mb, err := evs.CreateBucketIfNotExists([]byte(mac))
			if err != nil {
				return err
			}
			seq, err := mb.NextSequence()
			if err != nil {
				return err
			}
			data, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := mb.Put(seqKey(seq), data); err != nil {
				return err
			}
			if seq > MaxEventsPerMachine {
				if err := mb.Delete(seqKey(seq - MaxEventsPerMachine)); err != nil {
					return err
				}
			}
		}
		for mac, m := range seen {
			data, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if err := machines.Put([]byte(mac), data); err != nil {
				return err
			}
		}
		return nil
	})
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// applyEvent updates what a machine record knows from one event.
func applyEvent(m *matchbox.Machine, e matchbox.Event) {
	if m.FirstSeen.IsZero() || e.Time.Before(m.FirstSeen) {
		m.FirstSeen = e.Time
	}
	if e.Time.After(m.LastSeen) {
		m.LastSeen = e.Time
	}
	if e.IP != "" {
		m.LastIP = e.IP
	}
	if e.Arch != "" {
		m.Arch = e.Arch
	}
	if e.UUID != "" {
		m.UUID = e.UUID
	}
	if e.Group != "" {
		m.Group = e.Group
	}
	if e.Profile != "" {
		m.Profile = e.Profile
	}
}

// MachineEvents returns a machine's recorded events, oldest first.
func (b *Bolt) MachineEvents(_ context.Context, mac string) ([]matchbox.Event, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	var out []matchbox.Event
	err = b.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketEvents).Bucket([]byte(norm))
		if mb == nil {
			if tx.Bucket(bucketMachines).Get([]byte(norm)) == nil {
				return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
			}
			return nil
		}
		return mb.ForEach(func(_, v []byte) error {
			var e matchbox.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

func leaseKey(ip netip.Addr) []byte {
	a := ip.Unmap().As4()
	return a[:]
}

// Leases returns every persisted lease.
func (b *Bolt) Leases(_ context.Context) ([]matchbox.Lease, error) {
	var out []matchbox.Lease
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			var l matchbox.Lease
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("decode lease %v: %w", k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

// PutLeases commits leases durably. Concurrent callers are coalesced into
// one transaction (and one fsync) by bbolt's batching, so a DHCP server can
// commit every lease before its ACK at a high rate.
func (b *Bolt) PutLeases(_ context.Context, leases ...matchbox.Lease) error {
	encoded := make([][]byte, len(leases))
	for i, l := range leases {
		if !l.IP.Is4() && !l.IP.Is4In6() {
			return fmt.Errorf("%w: lease address %v is not IPv4", matchbox.ErrInvalid, l.IP)
		}
		if l.Updated.IsZero() {
			l.Updated = time.Now()
		}
		data, err := json.Marshal(l)
		if err != nil {
			return err
		}
		encoded[i] = data
	}
	return b.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketLeases)
		for i, l := range leases {
			if err := bk.Put(leaseKey(l.IP), encoded[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteLeases removes leases by address; missing ones are ignored.
func (b *Bolt) DeleteLeases(_ context.Context, ips ...netip.Addr) error {
	return b.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketLeases)
		for _, ip := range ips {
			if err := bk.Delete(leaseKey(ip)); err != nil {
				return err
			}
		}
		return nil
	})
}
