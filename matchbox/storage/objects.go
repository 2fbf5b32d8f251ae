package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

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
	err = db.update(func(tx kvTx, ch *changeSet) error {
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
	return db.update(func(tx kvTx, ch *changeSet) error {
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

// Objects returns every group, profile and template in the database, in
// key order, for the catalog.
func (db *DB) Objects(_ context.Context) (matchbox.Objects, error) {
	var objs matchbox.Objects
	var (
		groups   []*matchbox.Group
		profiles []*matchbox.Profile
		tmpls    []*storedTemplate
	)
	err := db.kv.View(func(tx kvTx) error {
		if err := decodeEach(tx, bucketGroups, func(g *matchbox.Group) { groups = append(groups, g) }); err != nil {
			return err
		}
		if err := decodeEach(tx, bucketProfiles, func(p *matchbox.Profile) { profiles = append(profiles, p) }); err != nil {
			return err
		}
		return decodeEach(tx, bucketTemplates, func(st *storedTemplate) { tmpls = append(tmpls, st) })
	})
	if err != nil {
		return objs, err
	}
	// Objects written before names were checked are served as they are
	// (dropping one would change which machines get what) and reported.
	stale := func(err error) {
		objs.Problems = append(objs.Problems, matchbox.Problem{Origin: "db", Severity: matchbox.SeverityWarning,
			Message: err.Error() + "; it was stored before such names were refused and is still served: replace it with one of a valid name"})
	}
	for _, g := range groups {
		g.Origin = "db"
		if err := checkGroupText(g); err != nil {
			stale(err)
		}
		g.Freeze() // held by the catalog for the life of the server
	}
	for _, p := range profiles {
		p.Origin = "db"
		if err := ValidateProfile(p); err != nil {
			stale(err)
		}
	}
	objs.Groups, objs.Profiles = groups, profiles
	for _, st := range tmpls {
		if err := matchbox.CheckName("template name", st.Name); err != nil {
			stale(err)
		}
		objs.Templates = append(objs.Templates, &matchbox.Template{Kind: st.Kind, Name: st.Name, Content: st.Content, Origin: "db"})
	}
	return objs, nil
}
