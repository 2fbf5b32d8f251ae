package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
)

// SchemaVersion is the version of the bbolt layout this build writes.
// Opening a database with a newer version is refused; older versions are
// migrated explicitly in migrate.
const SchemaVersion = 4

var (
	bucketMeta      = []byte("meta")
	bucketGroups    = []byte("groups")
	bucketProfiles  = []byte("profiles")
	bucketTemplates = []byte("templates")
	bucketMachines  = []byte("machines")
	keySchema       = []byte("schema_version")
)

// Bolt is the embedded bbolt store. Every write is committed and synced to
// disk before the call returns, so an acknowledged write survives a crash.
type Bolt struct {
	db *bolt.DB
	// inventory bounds the machine records events create.
	inventory inventory
}

// OpenBolt opens (creating if needed) the database at path. It fails fast
// when another process holds the database open.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open database %s: locked by another process (is another matchbox running?)", path)
		}
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	b := &Bolt{db: db}
	if err := b.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := b.countMachines(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return b, nil
}

// Close closes the database.
func (b *Bolt) Close() error { return b.db.Close() }

func (b *Bolt) migrate() error {
	return b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		version := 0
		if v := meta.Get(keySchema); v != nil {
			version, err = strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("corrupt schema version %q", v)
			}
		}
		if version > SchemaVersion {
			return fmt.Errorf("database schema version %d is newer than this matchbox supports (%d)", version, SchemaVersion)
		}
		// Version 0 → 1: configuration and machine buckets.
		// Version 1 → 2: event histories (a bucket per machine) and leases.
		// Version 2 → 3: event histories in one flat bucket (history); the
		// per-machine buckets cost too much under load and are dropped.
		// Version 3 → 4: machine records and events are written in a
		// binary form (codec.go); JSON records stay readable, so nothing
		// is rewritten, but older builds must not open the database.
		// The workflows and tokens_revoked buckets came later within
		// version 4: builds that do not know them leave them alone.
		if version == 2 && tx.Bucket(bucketEventsV2) != nil {
			if err := tx.DeleteBucket(bucketEventsV2); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bucketGroups, bucketProfiles, bucketTemplates, bucketMachines, bucketHistory, bucketLeases, bucketTokens, bucketRevoked, bucketBMC, bucketWorkflows} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
}

func put(b *Bolt, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(key), data)
	})
}

func get(b *Bolt, bucket []byte, key string, v any, what string) error {
	return b.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(key))
		if data == nil {
			return fmt.Errorf("%s %q: %w", what, key, matchbox.ErrNotFound)
		}
		return json.Unmarshal(data, v)
	})
}

func del(b *Bolt, bucket []byte, key, what string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk.Get([]byte(key)) == nil {
			return fmt.Errorf("%s %q: %w", what, key, matchbox.ErrNotFound)
		}
		return bk.Delete([]byte(key))
	})
}

func list[T any](b *Bolt, bucket []byte) ([]*T, error) {
	var out []*T
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			obj := new(T)
			if err := json.Unmarshal(v, obj); err != nil {
				return fmt.Errorf("decode %s %q: %w", bucket, k, err)
			}
			out = append(out, obj)
			return nil
		})
	})
	return out, err
}

// PutGroup creates or replaces a group after validating it.
func (b *Bolt) PutGroup(_ context.Context, g *matchbox.Group) error {
	if err := NormalizeGroup(g); err != nil {
		return err
	}
	return put(b, bucketGroups, g.ID, g)
}

// GetGroup returns a group by id.
func (b *Bolt) GetGroup(_ context.Context, id string) (*matchbox.Group, error) {
	var g matchbox.Group
	if err := get(b, bucketGroups, id, &g, "group"); err != nil {
		return nil, err
	}
	g.Origin = "db"
	return &g, nil
}

// DeleteGroup deletes a group by id.
func (b *Bolt) DeleteGroup(_ context.Context, id string) error {
	return del(b, bucketGroups, id, "group")
}

// PutProfile creates or replaces a profile after validating it.
func (b *Bolt) PutProfile(_ context.Context, p *matchbox.Profile) error {
	if err := ValidateProfile(p); err != nil {
		return err
	}
	return put(b, bucketProfiles, p.ID, p)
}

// GetProfile returns a profile by id.
func (b *Bolt) GetProfile(_ context.Context, id string) (*matchbox.Profile, error) {
	var p matchbox.Profile
	if err := get(b, bucketProfiles, id, &p, "profile"); err != nil {
		return nil, err
	}
	p.Origin = "db"
	return &p, nil
}

// DeleteProfile deletes a profile by id.
func (b *Bolt) DeleteProfile(_ context.Context, id string) error {
	return del(b, bucketProfiles, id, "profile")
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

// PutTemplate creates or replaces a template.
func (b *Bolt) PutTemplate(_ context.Context, t *matchbox.Template) error {
	if !validKind(t.Kind) {
		return fmt.Errorf("%w: unknown template kind %q", matchbox.ErrInvalid, t.Kind)
	}
	if err := CheckTemplateName(t.Name); err != nil {
		return err
	}
	return put(b, bucketTemplates, templateKey(t.Kind, t.Name), storedTemplate{t.Kind, t.Name, t.Content})
}

// GetTemplate returns a template by kind and name.
func (b *Bolt) GetTemplate(_ context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, error) {
	var st storedTemplate
	if err := get(b, bucketTemplates, templateKey(kind, name), &st, "template"); err != nil {
		return nil, err
	}
	return &matchbox.Template{Kind: st.Kind, Name: st.Name, Content: st.Content, Origin: "db"}, nil
}

// DeleteTemplate deletes a template by kind and name.
func (b *Bolt) DeleteTemplate(_ context.Context, kind matchbox.TemplateKind, name string) error {
	return del(b, bucketTemplates, templateKey(kind, name), "template")
}

func validKind(k matchbox.TemplateKind) bool {
	for _, kk := range matchbox.TemplateKinds {
		if k == kk {
			return true
		}
	}
	return false
}

// Objects returns every group, profile and template in the database, in
// key order, for the catalog.
func (b *Bolt) Objects(_ context.Context) (matchbox.Objects, error) {
	var objs matchbox.Objects
	groups, err := list[matchbox.Group](b, bucketGroups)
	if err != nil {
		return objs, err
	}
	profiles, err := list[matchbox.Profile](b, bucketProfiles)
	if err != nil {
		return objs, err
	}
	tmpls, err := list[storedTemplate](b, bucketTemplates)
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

// PutMachine creates or replaces a machine record.
func (b *Bolt) PutMachine(_ context.Context, m *matchbox.Machine) error {
	mac, err := matchbox.NormalizeMAC(m.MAC)
	if err != nil {
		return err
	}
	m.MAC = mac
	data := appendMachine(nil, m)
	created := false
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketMachines)
		created = bk.Get([]byte(m.MAC)) == nil
		return bk.Put([]byte(m.MAC), data)
	})
	if err == nil && created {
		b.inventory.count.Add(1)
	}
	return err
}

// GetMachine returns a machine by MAC address (any spelling).
func (b *Bolt) GetMachine(_ context.Context, mac string) (*matchbox.Machine, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	var m matchbox.Machine
	err = b.db.View(func(tx *bolt.Tx) error {
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
func (b *Bolt) ReservedIP(_ context.Context, mac string) (string, error) {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return "", err
	}
	var ip string
	err = b.db.View(func(tx *bolt.Tx) error {
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

// ListMachines returns every machine, ordered by MAC.
func (b *Bolt) ListMachines(_ context.Context) ([]*matchbox.Machine, error) {
	var out []*matchbox.Machine
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMachines).ForEach(func(k, v []byte) error {
			m := new(matchbox.Machine)
			if err := decodeMachine(v, m); err != nil {
				return fmt.Errorf("machine %s: %w", k, err)
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// DeleteMachine deletes a machine by MAC address.
func (b *Bolt) DeleteMachine(_ context.Context, mac string) error {
	norm, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketMachines)
		if bk.Get([]byte(norm)) == nil {
			return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
		}
		if err := bk.Delete([]byte(norm)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketBMC).Delete([]byte(norm)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketWorkflows).Delete([]byte(norm)); err != nil {
			return err
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
		b.inventory.count.Add(-1)
	}
	return err
}
