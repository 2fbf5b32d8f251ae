package storage

// MemoryBytes returns every key and value b holds, concatenated: what a
// dump of the backend would show, for the checks of what is stored in the
// clear.
func MemoryBytes(b *MemoryBackend) []byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []byte
	for name, bk := range b.buckets {
		out = append(out, name...)
		for _, e := range bk.entries {
			out = append(out, e.key...)
			out = append(out, e.value...)
		}
	}
	return out
}
