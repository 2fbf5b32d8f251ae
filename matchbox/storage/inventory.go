package storage

import (
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// inventory bounds the machine records that events create: an
// unauthenticated host can send events for any number of invented MACs.
type inventory struct {
	count atomic.Int64 // machine records in the store
	max   atomic.Int64 // 0: no bound
}

// SetMaxMachines bounds the machine records events create (0: no bound).
// Past it, events of machines not in the inventory are not recorded
// (RecordEvents counts them); machines already in it keep their history,
// and records an operator creates (BMC settings) are not refused.
func (b *Bolt) SetMaxMachines(n int) { b.inventory.max.Store(int64(max(n, 0))) }

// MachineCount is the number of machine records.
func (b *Bolt) MachineCount() int { return int(b.inventory.count.Load()) }

// countMachines reads the number of machine records, once at open.
func (b *Bolt) countMachines() error {
	return b.db.View(func(tx *bolt.Tx) error {
		b.inventory.count.Store(int64(tx.Bucket(bucketMachines).Stats().KeyN))
		return nil
	})
}

// admits reports whether one more machine record fits, given n created so
// far in the transaction.
func (v *inventory) admits(n int64) bool {
	m := v.max.Load()
	return m == 0 || v.count.Load()+n < m
}
