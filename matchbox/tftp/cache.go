package tftp

import (
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// A boot storm asks for the same few files (ipxe.efi, undionly.kpxe)
// hundreds of times; reading them from disk one block at a time costs a
// system call per TFTP packet. fileCache keeps recently served files in
// memory, keyed by path and checked against the file's size, times and
// inode on every request, so a replaced or edited file is read again.

// fileStamp identifies a version of a file.
type fileStamp struct {
	size, mtime, ctime int64
	ino, dev           uint64
}

func stampOf(fi fs.FileInfo) (fileStamp, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, false
	}
	return fileStamp{size: fi.Size(), mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), ino: st.Ino, dev: uint64(st.Dev)}, true
}

type cachedFile struct {
	stamp fileStamp
	data  []byte
	used  uint64 // tick of the last use, for eviction
}

// fileCache holds up to max bytes of file content; files larger than
// max/4 are never held.
type fileCache struct {
	mu    sync.Mutex
	max   int64
	total int64
	tick  uint64
	files map[string]*cachedFile
}

func newFileCache(max int64) *fileCache {
	return &fileCache{max: max, files: make(map[string]*cachedFile)}
}

// content returns the content of f (opened from key, described by fi)
// from the cache, reading and keeping it when it is not there or stale;
// ok is false when the file is not to be held (too large, no stamp, or it
// changed while being read): serve it from f then.
func (c *fileCache) content(key string, f *os.File, fi fs.FileInfo) (data []byte, ok bool) {
	if c == nil || c.max <= 0 || fi.Size() > c.max/4 {
		return nil, false
	}
	stamp, ok := stampOf(fi)
	if !ok {
		return nil, false
	}
	c.mu.Lock()
	if e := c.files[key]; e != nil && e.stamp == stamp {
		c.tick++
		e.used = c.tick
		c.mu.Unlock()
		return e.data, true
	}
	c.mu.Unlock()

	data = make([]byte, stamp.size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, false
	}
	if after, err := f.Stat(); err != nil {
		return nil, false
	} else if s, ok := stampOf(after); !ok || s != stamp {
		return nil, false // written to while read: do not keep a mix
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.files[key]; old != nil {
		c.total -= int64(len(old.data))
	}
	c.tick++
	c.files[key] = &cachedFile{stamp: stamp, data: data, used: c.tick}
	c.total += int64(len(data))
	for c.total > c.max {
		var oldest string
		var min uint64
		for k, e := range c.files {
			if oldest == "" || e.used < min {
				oldest, min = k, e.used
			}
		}
		c.total -= int64(len(c.files[oldest].data))
		delete(c.files, oldest)
	}
	return data, true
}
