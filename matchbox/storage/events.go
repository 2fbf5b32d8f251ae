package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"matchbox.dev/matchbox"
)

// MaxEventsPerMachine bounds the event history kept per machine; older
// events are dropped.
const MaxEventsPerMachine = 200

// RecordEvents appends events to their machines' histories and updates the
// machine records (first/last seen, last IP, arch, UUID, group, profile),
// creating records on first contact, in one transaction. An event of a
// machine not in the inventory creates no record, and is not recorded,
// when its MAC is only the client's word (Event.Claimed) or when the
// inventory holds SetMaxMachines records; those are counted in the result.
func (db *DB) RecordEvents(_ context.Context, events []matchbox.Event) (matchbox.NotRecorded, error) {
	// Normalise and sort by machine (stable: time order within one), so
	// the batch writes each machine's range once, in key order.
	var skipped matchbox.NotRecorded
	valid := make([]matchbox.Event, 0, len(events))
	for _, e := range events {
		mac, err := matchbox.NormalizeMAC(e.MAC)
		if err != nil {
			continue
		}
		e.MAC = mac
		valid = append(valid, e)
	}
	slices.SortStableFunc(valid, func(a, b matchbox.Event) int { return strings.Compare(a.MAC, b.MAC) })
	var mem arena
	var created int64
	err := db.update(func(tx kvTx, ch *changeSet) error {
		skipped, created = matchbox.NotRecorded{}, 0
		machines := tx.Bucket(bucketMachines)
		hist := tx.Bucket(bucketHistory)
		var m matchbox.Machine
		// cur is the machine of the events at hand, key its record's key;
		// have says m holds its record (read, or created by this batch).
		cur, have := "", false
		var key []byte
		flush := func() error {
			if !have {
				return nil
			}
			data := mem.encode(func(buf []byte) []byte { return appendMachine(buf, &m) })
			ch.add(kindMachine, m.MAC)
			return machines.Put(key, data)
		}
		for i := range valid {
			e := &valid[i]
			if e.MAC != cur {
				if err := flush(); err != nil {
					return err
				}
				cur, have = e.MAC, false
				key = mem.encode(func(buf []byte) []byte { return append(buf, e.MAC...) })
				if data := machines.Get(key); data != nil {
					m = matchbox.Machine{MAC: e.MAC}
					if err := decodeMachine(data, &m); err != nil {
						return fmt.Errorf("machine %s: %w", e.MAC, err)
					}
					m.MAC, have = e.MAC, true
				}
			}
			if !have {
				switch {
				case e.Claimed:
					skipped.Unconfirmed++
					continue
				case !db.inventory.admits(created):
					skipped.Full++
					continue
				}
				m, have = matchbox.Machine{MAC: e.MAC}, true
				created++
			}
			applyEvent(&m, *e)
			m.EventSeq++
			hkey := mem.encode(func(buf []byte) []byte { return appendHistoryKey(buf, e.MAC, m.EventSeq) })
			data := mem.encode(func(buf []byte) []byte { return appendEvent(buf, e, false) })
			if err := hist.Put(hkey, data); err != nil {
				return err
			}
			if m.EventSeq > MaxEventsPerMachine {
				if err := hist.Delete(historyKey(e.MAC, m.EventSeq-MaxEventsPerMachine)); err != nil {
					return err
				}
			}
		}
		return flush()
	})
	if err != nil {
		return matchbox.NotRecorded{}, err
	}
	db.inventory.count.Add(created)
	return skipped, nil
}

func historyKey(mac string, seq uint64) []byte {
	return appendHistoryKey(make([]byte, 0, len(mac)+8), mac, seq)
}

func appendHistoryKey(b []byte, mac string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, mac...), seq)
}

// applyEvent updates what a machine record knows from one event.
func applyEvent(m *matchbox.Machine, e matchbox.Event) {
	// A claimed event goes into the history, but says nothing for sure
	// of the machine: its address may be another host's.
	if !e.Kind.FromMachine() || e.Claimed {
		return
	}
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
func (db *DB) MachineEvents(_ context.Context, mac string) ([]matchbox.Event, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	var out []matchbox.Event
	err = db.kv.View(func(tx kvTx) error {
		if tx.Bucket(bucketMachines).Get([]byte(norm)) == nil {
			return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
		}
		prefix := []byte(norm)
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
			e := matchbox.Event{MAC: norm}
			if err := decodeEvent(v, &e); err != nil {
				return fmt.Errorf("machine %s: %w", norm, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func leaseKey(ip netip.Addr) []byte {
	a := ip.Unmap().As4()
	return a[:]
}

// addLease notes a lease written, spelling its address only when someone
// watches leases (PutLeases is on the DHCP server's path).
func addLease(ch *changeSet, ip netip.Addr) {
	if ch.wants(kindLease) {
		ch.add(kindLease, ip.Unmap().String())
	} else {
		ch.touch(kindLease)
	}
}

// Leases returns every persisted lease.
func (db *DB) Leases(_ context.Context) ([]matchbox.Lease, error) {
	return listValues[matchbox.Lease](db, bucketLeases)
}

// Lease returns the persisted lease of ip, or ErrNotFound.
func (db *DB) Lease(_ context.Context, ip netip.Addr) (matchbox.Lease, error) {
	var l matchbox.Lease
	err := db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(bucketLeases).Get(leaseKey(ip))
		if data == nil {
			return fmt.Errorf("lease of %v: %w", ip, matchbox.ErrNotFound)
		}
		return json.Unmarshal(data, &l)
	})
	return l, err
}

// PutLeases commits leases durably. Concurrent callers are coalesced into
// one transaction (and one fsync) by bbolt's batching, so a DHCP server can
// commit every lease before its ACK at a high rate.
func (db *DB) PutLeases(_ context.Context, leases ...matchbox.Lease) error {
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
	return db.batch(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketLeases)
		for i, l := range leases {
			addLease(ch, l.IP)
			if err := bk.Put(leaseKey(l.IP), encoded[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteLeases removes leases by address; missing ones are ignored.
func (db *DB) DeleteLeases(_ context.Context, ips ...netip.Addr) error {
	return db.batch(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketLeases)
		for _, ip := range ips {
			if bk.Get(leaseKey(ip)) == nil {
				continue
			}
			addLease(ch, ip)
			if err := bk.Delete(leaseKey(ip)); err != nil {
				return err
			}
		}
		return nil
	})
}
