package storage

import (
	"fmt"
	"sync"
)

// combiner shares write transactions between concurrent writers without
// delaying any: a writer that finds no commit running commits at once;
// writers that arrive while one runs queue, and when it ends the first of
// them commits everything queued (at most maxCombined) in one
// transaction, one fsync for all. bbolt's own Batch instead waits up to
// its MaxBatchDelay (10 ms) for company, which a lone writer (an API
// write, a Terraform apply) pays in full.
//
// As with bbolt's Batch, a function may run more than once: when one
// returns an error the transaction is rolled back, that function is run
// again alone (its result is its own), and the others run again together.
type combiner struct {
	mu    sync.Mutex
	queue []*combined
	busy  bool // a batch is being committed, or handed to its leader
}

// combined is one writer's call.
type combined struct {
	fn   func(kvTx) error
	res  chan error    // its result
	lead chan struct{} // closed when this writer is to commit the queue
}

// maxCombined bounds the writes one transaction takes.
const maxCombined = 1000

// do runs fn in a write transaction made by update, possibly shared.
func (c *combiner) do(fn func(kvTx) error, update func(func(kvTx) error) error) error {
	w := &combined{fn: fn, res: make(chan error, 1), lead: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, w)
	if c.busy {
		c.mu.Unlock()
		select {
		case err := <-w.res:
			return err
		case <-w.lead:
		}
	} else {
		c.busy = true
		c.mu.Unlock()
	}
	c.commitQueue(update)
	return <-w.res
}

// commitQueue commits what is queued, then hands the lead to the first
// writer queued meanwhile (or marks the combiner idle).
func (c *combiner) commitQueue(update func(func(kvTx) error) error) {
	c.mu.Lock()
	n := min(len(c.queue), maxCombined)
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	c.mu.Unlock()
	runCombined(batch, update)
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.busy = false
		c.queue = nil
		c.mu.Unlock()
		return
	}
	next := c.queue[0]
	c.mu.Unlock()
	close(next.lead)
}

// runCombined commits the batch's functions in one transaction and tells
// each its result.
func runCombined(batch []*combined, update func(func(kvTx) error) error) {
	for len(batch) > 0 {
		failed := -1
		err := update(func(tx kvTx) error {
			for i, w := range batch {
				if err := safeCall(w.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, w := range batch {
				w.res <- err // nil, or the commit's failure: everyone's
			}
			return
		}
		w := batch[failed]
		w.res <- update(func(tx kvTx) error { return safeCall(w.fn, tx) })
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}

// safeCall runs one writer's function, a panic in it returned as its
// error: it runs on another writer's goroutine, and the others in its
// batch, and every writer after them, must still hear back.
func safeCall(fn func(kvTx) error, tx kvTx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return fn(tx)
}
