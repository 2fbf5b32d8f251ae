package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"matchbox.dev/matchbox"
)

// Reinstall workflows are stored as JSON, one record per machine, keyed by
// MAC.

// Workflow returns a machine's stored workflow.
func (db *DB) Workflow(_ context.Context, mac string) (matchbox.Workflow, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return matchbox.Workflow{}, err
	}
	var w matchbox.Workflow
	err = db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(bucketWorkflows).Get([]byte(norm))
		if data == nil {
			return fmt.Errorf("workflow of machine %s: %w", norm, matchbox.ErrNotFound)
		}
		return json.Unmarshal(data, &w)
	})
	return w, err
}

// Workflows returns every stored workflow, in MAC order.
func (db *DB) Workflows(_ context.Context) ([]matchbox.Workflow, error) {
	return listValues[matchbox.Workflow](db, bucketWorkflows)
}

// SwapWorkflow stores next if the machine's stored workflow still has
// generation prev (0: none stored), in one transaction.
func (db *DB) SwapWorkflow(_ context.Context, prev uint64, next matchbox.Workflow) error {
	norm, err := matchbox.NormalizeMAC(next.MAC)
	if err != nil {
		return err
	}
	next.MAC = norm
	data, err := json.Marshal(next)
	if err != nil {
		return err
	}
	return db.update(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketWorkflows)
		var have uint64
		if cur := bk.Get([]byte(norm)); cur != nil {
			var w matchbox.Workflow
			if err := json.Unmarshal(cur, &w); err != nil {
				return fmt.Errorf("workflow of machine %s: %w", norm, err)
			}
			have = w.Generation
		}
		if have != prev {
			return fmt.Errorf("workflow of machine %s is at generation %d, not %d: %w", norm, have, prev, matchbox.ErrPrecondition)
		}
		ch.add(kindWorkflow, norm)
		return bk.Put([]byte(norm), data)
	})
}
