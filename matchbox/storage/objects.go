package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"sync"

	"matchbox.dev/matchbox"
)

// Groups, profiles and templates written through the admin API are stored
// as JSON, keyed by id (templates by "kind/name"). Every stored object has
// an ETag (a hash of its stored bytes), and a write can require that the
// object still has the ETag its writer read, checked and written in one
// transaction so two writers never silently overwrite each other.

// objectKind is where and how objects of one kind are stored.
type objectKind struct {
	bucket []byte
	what   string // in errors
	change kindSet
}

var (
	groupObjects    = objectKind{bucketGroups, "group", kindGroup}
	profileObjects  = objectKind{bucketProfiles, "profile", kindProfile}
	templateObjects = objectKind{bucketTemplates, "template", kindTemplate}
)

// etag is the ETag of stored bytes (quoted, as HTTP sends it).
func etag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// check applies cond to the stored value (nil: absent).
func check(cond matchbox.Condition, what, key string, stored []byte) error {
	switch {
	case cond.IfNoneMatch && stored != nil:
		return fmt.Errorf("%w: %s %q already exists", matchbox.ErrPrecondition, what, key)
	case cond.IfMatch == "":
		return nil
	case stored == nil:
		return fmt.Errorf("%w: %s %q does not exist", matchbox.ErrPrecondition, what, key)
	case cond.IfMatch != "*" && cond.IfMatch != etag(stored):
		return fmt.Errorf("%w: %s %q changed since it was read (ETag %s, not %s)", matchbox.ErrPrecondition, what, key, etag(stored), cond.IfMatch)
	}
	return nil
}

func putIf(db *DB, o objectKind, key string, v any, cond matchbox.Condition) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	// Batched: concurrent writers (Terraform's parallel applies) share a
	// commit; the function only checks before it writes, so running it
	// again is harmless.
	err = db.batch(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(o.bucket)
		if err := check(cond, o.what, key, bk.Get([]byte(key))); err != nil {
			return err
		}
		ch.add(o.change, key)
		return bk.Put([]byte(key), data)
	})
	if err != nil {
		return "", err
	}
	return etag(data), nil
}

func deleteIf(db *DB, o objectKind, key string, cond matchbox.Condition) error {
	return db.batch(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(o.bucket)
		stored := bk.Get([]byte(key))
		if stored == nil {
			return fmt.Errorf("%s %q: %w", o.what, key, matchbox.ErrNotFound)
		}
		if err := check(cond, o.what, key, stored); err != nil {
			return err
		}
		ch.add(o.change, key)
		return bk.Delete([]byte(key))
	})
}

func getVersion(db *DB, o objectKind, key string, v any) (string, error) {
	var tag string
	err := db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(o.bucket).Get([]byte(key))
		if data == nil {
			return fmt.Errorf("%s %q: %w", o.what, key, matchbox.ErrNotFound)
		}
		tag = etag(data)
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("%s %q: %w", o.what, key, err)
		}
		return nil
	})
	return tag, err
}

// GroupVersion returns a group and its ETag.
func (db *DB) GroupVersion(_ context.Context, id string) (*matchbox.Group, string, error) {
	var g matchbox.Group
	tag, err := getVersion(db, groupObjects, id, &g)
	if err != nil {
		return nil, "", err
	}
	g.Origin = "db"
	return &g, tag, nil
}

// PutGroupIf validates g and writes it if cond holds; it returns the new
// ETag.
func (db *DB) PutGroupIf(_ context.Context, g *matchbox.Group, cond matchbox.Condition) (string, error) {
	if err := NormalizeGroup(g); err != nil {
		return "", err
	}
	return putIf(db, groupObjects, g.ID, g, cond)
}

// DeleteGroupIf deletes a group if cond holds.
func (db *DB) DeleteGroupIf(_ context.Context, id string, cond matchbox.Condition) error {
	return deleteIf(db, groupObjects, id, cond)
}

// ProfileVersion returns a profile and its ETag.
func (db *DB) ProfileVersion(_ context.Context, id string) (*matchbox.Profile, string, error) {
	var p matchbox.Profile
	tag, err := getVersion(db, profileObjects, id, &p)
	if err != nil {
		return nil, "", err
	}
	p.Origin = "db"
	return &p, tag, nil
}

// PutProfileIf validates p and writes it if cond holds; it returns the new
// ETag.
func (db *DB) PutProfileIf(_ context.Context, p *matchbox.Profile, cond matchbox.Condition) (string, error) {
	if err := ValidateProfile(p); err != nil {
		return "", err
	}
	return putIf(db, profileObjects, p.ID, p, cond)
}

// DeleteProfileIf deletes a profile if cond holds.
func (db *DB) DeleteProfileIf(_ context.Context, id string, cond matchbox.Condition) error {
	return deleteIf(db, profileObjects, id, cond)
}

// storedTemplate is a template's database form.
type storedTemplate struct {
	Kind    matchbox.TemplateKind `json:"kind"`
	Name    string                `json:"name"`
	Content []byte                `json:"content"`
}

func templateKey(kind matchbox.TemplateKind, name string) string {
	return string(kind) + "/" + name
}

// TemplateVersion returns a template and its ETag.
func (db *DB) TemplateVersion(_ context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, string, error) {
	var st storedTemplate
	tag, err := getVersion(db, templateObjects, templateKey(kind, name), &st)
	if err != nil {
		return nil, "", err
	}
	return &matchbox.Template{Kind: st.Kind, Name: st.Name, Content: st.Content, Origin: "db"}, tag, nil
}

// PutTemplateIf writes a template if cond holds; it returns the new ETag.
func (db *DB) PutTemplateIf(_ context.Context, t *matchbox.Template, cond matchbox.Condition) (string, error) {
	if !validKind(t.Kind) {
		return "", fmt.Errorf("%w: unknown template kind %q", matchbox.ErrInvalid, t.Kind)
	}
	if err := CheckTemplateName(t.Name); err != nil {
		return "", err
	}
	return putIf(db, templateObjects, templateKey(t.Kind, t.Name), storedTemplate{t.Kind, t.Name, t.Content}, cond)
}

// DeleteTemplateIf deletes a template if cond holds.
func (db *DB) DeleteTemplateIf(_ context.Context, kind matchbox.TemplateKind, name string, cond matchbox.Condition) error {
	return deleteIf(db, templateObjects, templateKey(kind, name), cond)
}

func validKind(k matchbox.TemplateKind) bool {
	for _, kk := range matchbox.TemplateKinds {
		if k == kk {
			return true
		}
	}
	return false
}

// decodeEach decodes the JSON value of every key of a bucket, in key
// order, each into a new T given to add.
func decodeEach[T any](tx kvTx, bucket []byte, add func(*T)) error {
	return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		x := new(T)
		if err := json.Unmarshal(v, x); err != nil {
			return fmt.Errorf("decode %s %q: %w", bucket, k, err)
		}
		add(x)
		return nil
	})
}

// listValues returns the decoded values of a bucket, in key order.
func listValues[T any](db *DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.kv.View(func(tx kvTx) error {
		return decodeEach(tx, bucket, func(x *T) { out = append(out, *x) })
	})
	return out, err
}

// The catalog reloads the database's objects after every write through the
// admin API, and a fleet has thousands of groups: decoding, checking and
// freezing all of them each time would cost a write tens of milliseconds.
// Objects keeps what it made of each stored value and makes it again only
// when the value changed.

// objectCache is what Objects made of each bucket's values.
type objectCache struct {
	mu        sync.Mutex // one Objects at a time
	seed      maphash.Seed
	groups    bucketCache[matchbox.Group]
	profiles  bucketCache[matchbox.Profile]
	templates bucketCache[matchbox.Template]
}

// decodedObject is what Objects made of one stored value: the object, and
// the error it is reported stale with (nil: none). Objects hands out obj
// again for as long as the value stays the same, to callers that keep it
// (the catalog's snapshots): nothing may change it once made.
type decodedObject[T any] struct {
	key   string
	size  int
	hash  uint64 // of the stored value, with objectCache.seed
	obj   *T
	stale error
}

// bucketCache holds a bucket's decoded objects in key order, as the last
// scan found them: bounded by the bucket. spare is the slice before,
// emptied, for the next scan to fill.
type bucketCache[T any] struct {
	entries, spare []decodedObject[T]
}

// scan returns the decoded object of every value of bucket, in key order:
// the one made before for a value with the same hash and length, one made
// by decode (obj and stale) otherwise. The cache keeps the keys scanned
// only, and changes only when the scan succeeds.
func (c *bucketCache[T]) scan(tx kvTx, bucket []byte, seed maphash.Seed, decode func(v []byte) (decodedObject[T], error)) ([]decodedObject[T], error) {
	old, next := c.entries, c.spare[:0]
	j := 0 // old[:j] sort before the key scanned
	err := tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		for j < len(old) && old[j].key < string(k) {
			j++
		}
		h := maphash.Bytes(seed, v)
		if j < len(old) && old[j].key == string(k) && old[j].size == len(v) && old[j].hash == h {
			next = append(next, old[j])
			j++
			return nil
		}
		d, err := decode(v)
		if err != nil {
			return fmt.Errorf("decode %s %q: %w", bucket, k, err)
		}
		d.key, d.size, d.hash = string(k), len(v), h
		next = append(next, d)
		return nil
	})
	if err != nil {
		clear(next)
		c.spare = next[:0]
		return nil, err
	}
	clear(old) // no longer keeps objects the store has dropped alive
	c.entries, c.spare = next, old[:0]
	return next, nil
}

// storedGroup decodes a stored group, checks it and freezes it.
func storedGroup(v []byte) (decodedObject[matchbox.Group], error) {
	g := new(matchbox.Group)
	if err := json.Unmarshal(v, g); err != nil {
		return decodedObject[matchbox.Group]{}, err
	}
	g.Origin = "db"
	stale := checkGroupText(g) // before Freeze, which moves the metadata
	g.Freeze()                 // held by the catalog for the life of the server
	return decodedObject[matchbox.Group]{obj: g, stale: stale}, nil
}

// storedProfile decodes a stored profile and checks it.
func storedProfile(v []byte) (decodedObject[matchbox.Profile], error) {
	p := new(matchbox.Profile)
	if err := json.Unmarshal(v, p); err != nil {
		return decodedObject[matchbox.Profile]{}, err
	}
	p.Origin = "db"
	return decodedObject[matchbox.Profile]{obj: p, stale: ValidateProfile(p)}, nil
}

// storedTemplateObject decodes a stored template and checks its name.
func storedTemplateObject(v []byte) (decodedObject[matchbox.Template], error) {
	var st storedTemplate
	if err := json.Unmarshal(v, &st); err != nil {
		return decodedObject[matchbox.Template]{}, err
	}
	t := &matchbox.Template{Kind: st.Kind, Name: st.Name, Content: st.Content, Origin: "db"}
	return decodedObject[matchbox.Template]{obj: t, stale: matchbox.CheckName("template name", st.Name)}, nil
}

// Objects returns every group, profile and template in the database, in
// key order, for the catalog. Objects it returned before come back as
// they were while their stored values stay the same: callers must not
// change them.
func (db *DB) Objects(_ context.Context) (matchbox.Objects, error) {
	c := &db.objects
	c.mu.Lock()
	defer c.mu.Unlock()
	var (
		groups    []decodedObject[matchbox.Group]
		profiles  []decodedObject[matchbox.Profile]
		templates []decodedObject[matchbox.Template]
	)
	err := db.kv.View(func(tx kvTx) error {
		var err error
		if groups, err = c.groups.scan(tx, bucketGroups, c.seed, storedGroup); err != nil {
			return err
		}
		if profiles, err = c.profiles.scan(tx, bucketProfiles, c.seed, storedProfile); err != nil {
			return err
		}
		templates, err = c.templates.scan(tx, bucketTemplates, c.seed, storedTemplateObject)
		return err
	})
	var objs matchbox.Objects
	if err != nil {
		return objs, err
	}
	// Objects written before names were checked are served as they are
	// (dropping one would change which machines get what) and reported.
	stale := func(err error) {
		if err != nil {
			objs.Problems = append(objs.Problems, matchbox.Problem{Origin: "db", Severity: matchbox.SeverityWarning,
				Message: err.Error() + "; it was stored before such names were refused and is still served: replace it with one of a valid name"})
		}
	}
	objs.Groups = cachedObjects(groups, stale)
	objs.Profiles = cachedObjects(profiles, stale)
	objs.Templates = cachedObjects(templates, stale)
	return objs, nil
}

// cachedObjects returns the objects of decoded (nil when there are none),
// handing each one's stale error to stale.
func cachedObjects[T any](decoded []decodedObject[T], stale func(error)) []*T {
	if len(decoded) == 0 {
		return nil
	}
	out := make([]*T, len(decoded))
	for i, d := range decoded {
		out[i] = d.obj
		stale(d.stale)
	}
	return out
}
