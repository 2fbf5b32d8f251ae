package render

import (
	"container/list"
	"sync"
)

type cacheValue struct {
	out []byte
	err error
}

type lruEntry struct {
	key [32]byte
	val cacheValue
}

// lru is a size-bounded least-recently-used cache of Butane translations.
type lru struct {
	mu           sync.Mutex
	max, size    int
	ll           *list.List
	items        map[[32]byte]*list.Element
	hits, misses uint64
}

func newLRU(maxBytes int) *lru {
	return &lru{max: maxBytes, ll: list.New(), items: make(map[[32]byte]*list.Element)}
}

func entrySize(v cacheValue) int {
	n := len(v.out) + 128
	if v.err != nil {
		n += len(v.err.Error())
	}
	return n
}

func (c *lru) get(k [32]byte) (cacheValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		c.hits++
		return el.Value.(*lruEntry).val, true
	}
	c.misses++
	return cacheValue{}, false
}

// peek is get without counting a hit or miss.
func (c *lru) peek(k [32]byte) (cacheValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		return el.Value.(*lruEntry).val, true
	}
	return cacheValue{}, false
}

func (c *lru) add(k [32]byte, v cacheValue) {
	n := entrySize(v)
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&lruEntry{key: k, val: v})
	c.size += n
	for c.size > c.max {
		el := c.ll.Back()
		ent := el.Value.(*lruEntry)
		c.ll.Remove(el)
		delete(c.items, ent.key)
		c.size -= entrySize(ent.val)
	}
}

func (c *lru) stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
