package storage

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"

	"matchbox.dev/matchbox"
)

// Machine records are keyed by MAC address (lowercase, colons), in the
// binary form of codec.go.

// inventory bounds the machine records that events create: an
// unauthenticated host can send events for any number of invented MACs.
type inventory struct {
	count *atomic.Int64 // machine records in the backend (shared by its stores)
	max   atomic.Int64  // 0: no bound
}

// SetMaxMachines bounds the machine records events create (0: no bound).
// Past it, events of machines not in the inventory are not recorded
// (RecordEvents counts them); machines already in it keep their history,
// and records an operator creates (BMC settings) are not refused.
func (db *DB) SetMaxMachines(n int) { db.inventory.max.Store(int64(max(n, 0))) }

// MachineCount is the number of machine records.
func (db *DB) MachineCount() int { return int(db.inventory.count.Load()) }

// admits reports whether one more machine record fits, given n created so
// far in the transaction.
func (v *inventory) admits(n int64) bool {
	m := v.max.Load()
	return m == 0 || v.count.Load()+n < m
}

// PutMachine creates or replaces a machine record. Nothing in the server
// writes whole records (events and the admin API update them); it is for
// seeding a store, in tests and tools.
func (db *DB) PutMachine(_ context.Context, m *matchbox.Machine) error {
	mac, err := matchbox.NormalizeMAC(m.MAC)
	if err != nil {
		return err
	}
	m.MAC = mac
	data := appendMachine(nil, m)
	created := false
	err = db.update(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketMachines)
		created = bk.Get([]byte(m.MAC)) == nil
		ch.add(kindMachine, m.MAC)
		return bk.Put([]byte(m.MAC), data)
	})
	if err == nil && created {
		db.inventory.count.Add(1)
	}
	return err
}

// GetMachine returns a machine by MAC address (any spelling).
func (db *DB) GetMachine(_ context.Context, mac string) (*matchbox.Machine, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	var m matchbox.Machine
	err = db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(bucketMachines).Get([]byte(norm))
		if data == nil {
			return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
		}
		return decodeMachine(data, &m)
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// ReservedIP returns the reserved address on a machine's record, reading
// the record only when it has one (the DHCP server asks on every packet).
func (db *DB) ReservedIP(_ context.Context, mac string) (string, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return "", err
	}
	var ip string
	err = db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(bucketMachines).Get([]byte(norm))
		if data == nil || (data[0] == '{' && !bytes.Contains(data, []byte(`"reserved_ip"`))) {
			return nil
		}
		var m matchbox.Machine
		if err := decodeMachine(data, &m); err != nil {
			return fmt.Errorf("machine %s: %w", norm, err)
		}
		ip = m.ReservedIP
		return nil
	})
	return ip, err
}

// DeleteMachine deletes a machine by MAC address, with its history, BMC
// settings and workflow.
func (db *DB) DeleteMachine(_ context.Context, mac string) error {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	err = db.update(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketMachines)
		if bk.Get([]byte(norm)) == nil {
			return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
		}
		if err := bk.Delete([]byte(norm)); err != nil {
			return err
		}
		ch.add(kindMachine, norm)
		for _, side := range []struct {
			bucket []byte
			kind   kindSet
		}{{bucketBMC, kindBMC}, {bucketWorkflows, kindWorkflow}} {
			sb := tx.Bucket(side.bucket)
			if sb.Get([]byte(norm)) == nil {
				continue
			}
			if err := sb.Delete([]byte(norm)); err != nil {
				return err
			}
			ch.add(side.kind, norm)
		}
		// Its history goes with it.
		c := tx.Bucket(bucketHistory).Cursor()
		prefix := []byte(norm)
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = c.Seek(prefix) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		db.inventory.count.Add(-1)
	}
	return err
}

// MachinePage returns up to limit machines (0: all) with a MAC after
// after, in MAC order, that keep passes (nil: all), and whether more
// follow.
func (db *DB) MachinePage(_ context.Context, after string, limit int, keep func(*matchbox.Machine) bool) ([]*matchbox.Machine, bool, error) {
	var out []*matchbox.Machine
	more := false
	err := db.kv.View(func(tx kvTx) error {
		c := tx.Bucket(bucketMachines).Cursor()
		var k, v []byte
		if after == "" {
			k, v = c.First()
		} else {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			m := new(matchbox.Machine)
			if err := decodeMachine(v, m); err != nil {
				return fmt.Errorf("machine %s: %w", k, err)
			}
			if keep != nil && !keep(m) {
				continue
			}
			if limit > 0 && len(out) == limit {
				more = true
				return nil
			}
			out = append(out, m)
		}
		return nil
	})
	return out, more, err
}

// SetMachineLabels replaces a machine's labels; the machine must exist.
func (db *DB) SetMachineLabels(_ context.Context, mac string, labels map[string]string) (*matchbox.Machine, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	for k, v := range labels {
		if err := matchbox.CheckLabel("label", k, v); err != nil {
			return nil, err
		}
		if k == "" || len(k) > 256 || len(v) > 1024 {
			return nil, fmt.Errorf("%w: label %s: keys 1 to 256 bytes, values up to 1024", matchbox.ErrInvalid, matchbox.Quote(k))
		}
	}
	var m matchbox.Machine
	err = db.update(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketMachines)
		data := bk.Get([]byte(norm))
		if data == nil {
			return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
		}
		if err := decodeMachine(data, &m); err != nil {
			return fmt.Errorf("machine %s: %w", norm, err)
		}
		m.Labels = labels
		ch.add(kindMachine, norm)
		return bk.Put([]byte(norm), appendMachine(nil, &m))
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}
