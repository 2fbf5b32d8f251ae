package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
)

// Versioned reads and conditional writes, for the admin API: every stored
// object has an ETag (a hash of its stored bytes), and a write can require
// that the object still has the ETag its writer read, checked and written
// in one transaction so two writers never silently overwrite each other.

var (
	bucketTokens  = []byte("tokens")         // keyed by token name
	bucketRevoked = []byte("tokens_revoked") // keyed by the revoked secret's hash
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

func putIf(b *Bolt, bucket []byte, what, key string, v any, cond matchbox.Condition) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if err := check(cond, what, key, bk.Get([]byte(key))); err != nil {
			return err
		}
		return bk.Put([]byte(key), data)
	})
	if err != nil {
		return "", err
	}
	return etag(data), nil
}

func deleteIf(b *Bolt, bucket []byte, what, key string, cond matchbox.Condition) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		stored := bk.Get([]byte(key))
		if stored == nil {
			return fmt.Errorf("%s %q: %w", what, key, matchbox.ErrNotFound)
		}
		if err := check(cond, what, key, stored); err != nil {
			return err
		}
		return bk.Delete([]byte(key))
	})
}

func getVersion(b *Bolt, bucket []byte, what, key string, v any) (string, error) {
	var tag string
	err := b.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(key))
		if data == nil {
			return fmt.Errorf("%s %q: %w", what, key, matchbox.ErrNotFound)
		}
		tag = etag(data)
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("%s %q: %w", what, key, err)
		}
		return nil
	})
	return tag, err
}

// GroupVersion returns a group and its ETag.
func (b *Bolt) GroupVersion(_ context.Context, id string) (*matchbox.Group, string, error) {
	var g matchbox.Group
	tag, err := getVersion(b, bucketGroups, "group", id, &g)
	if err != nil {
		return nil, "", err
	}
	g.Origin = "db"
	return &g, tag, nil
}

// PutGroupIf validates g and writes it if cond holds; it returns the new
// ETag.
func (b *Bolt) PutGroupIf(_ context.Context, g *matchbox.Group, cond matchbox.Condition) (string, error) {
	if err := NormalizeGroup(g); err != nil {
		return "", err
	}
	return putIf(b, bucketGroups, "group", g.ID, g, cond)
}

// DeleteGroupIf deletes a group if cond holds.
func (b *Bolt) DeleteGroupIf(_ context.Context, id string, cond matchbox.Condition) error {
	return deleteIf(b, bucketGroups, "group", id, cond)
}

// ProfileVersion returns a profile and its ETag.
func (b *Bolt) ProfileVersion(_ context.Context, id string) (*matchbox.Profile, string, error) {
	var p matchbox.Profile
	tag, err := getVersion(b, bucketProfiles, "profile", id, &p)
	if err != nil {
		return nil, "", err
	}
	p.Origin = "db"
	return &p, tag, nil
}

// PutProfileIf validates p and writes it if cond holds; it returns the new
// ETag.
func (b *Bolt) PutProfileIf(_ context.Context, p *matchbox.Profile, cond matchbox.Condition) (string, error) {
	if err := ValidateProfile(p); err != nil {
		return "", err
	}
	return putIf(b, bucketProfiles, "profile", p.ID, p, cond)
}

// DeleteProfileIf deletes a profile if cond holds.
func (b *Bolt) DeleteProfileIf(_ context.Context, id string, cond matchbox.Condition) error {
	return deleteIf(b, bucketProfiles, "profile", id, cond)
}

// CreateToken stores a new token; a name already taken is ErrConflict, and
// so is a secret that was revoked before (a revoked secret never comes
// back).
func (b *Bolt) CreateToken(_ context.Context, t matchbox.Token) error {
	if err := matchbox.CheckName("token name", t.Name); err != nil {
		return err
	}
	if len(t.Name) > 128 || strings.ContainsAny(t.Name, "/ ") {
		return fmt.Errorf("%w: token name %s: 1 to 128 bytes, no spaces or slashes", matchbox.ErrInvalid, matchbox.Quote(t.Name))
	}
	if !t.Role.Valid() {
		return fmt.Errorf("%w: token role %q: want read or admin", matchbox.ErrInvalid, t.Role)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		if rv := tx.Bucket(bucketRevoked).Get([]byte(t.Hash)); rv != nil {
			var old matchbox.RevokedToken
			_ = json.Unmarshal(rv, &old)
			return fmt.Errorf("%w: this token's secret was revoked (as token %q, %s) and is never accepted again: use a new secret", matchbox.ErrConflict, old.Name, old.Revoked.Format(time.RFC3339))
		}
		bk := tx.Bucket(bucketTokens)
		if bk.Get([]byte(t.Name)) != nil {
			return fmt.Errorf("%w: a token named %q exists (revoke it first)", matchbox.ErrConflict, t.Name)
		}
		return bk.Put([]byte(t.Name), data)
	})
}

// DeleteToken revokes a token by name: the token is deleted and the hash
// of its secret kept, in one transaction, so that the secret is never
// accepted again.
func (b *Bolt) DeleteToken(_ context.Context, name string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTokens)
		data := bk.Get([]byte(name))
		if data == nil {
			return fmt.Errorf("token %q: %w", name, matchbox.ErrNotFound)
		}
		var t matchbox.Token
		if err := json.Unmarshal(data, &t); err != nil {
			return fmt.Errorf("token %q: %w", name, err)
		}
		if t.Hash != "" {
			rv, err := json.Marshal(matchbox.RevokedToken{Name: t.Name, Hash: t.Hash, Revoked: time.Now().UTC()})
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketRevoked).Put([]byte(t.Hash), rv); err != nil {
				return err
			}
		}
		return bk.Delete([]byte(name))
	})
}

// RevokedToken returns what is kept of the revoked token whose secret has
// hash, or ErrNotFound when no such token was revoked.
func (b *Bolt) RevokedToken(_ context.Context, hash string) (matchbox.RevokedToken, error) {
	var rv matchbox.RevokedToken
	err := b.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketRevoked).Get([]byte(hash))
		if data == nil {
			return fmt.Errorf("revoked token: %w", matchbox.ErrNotFound)
		}
		return json.Unmarshal(data, &rv)
	})
	return rv, err
}

// Tokens lists the stored tokens by name.
func (b *Bolt) Tokens(_ context.Context) ([]matchbox.Token, error) {
	var out []matchbox.Token
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var t matchbox.Token
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("token %q: %w", k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b matchbox.Token) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// TemplateVersion returns a template and its ETag.
func (b *Bolt) TemplateVersion(_ context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, string, error) {
	var st storedTemplate
	tag, err := getVersion(b, bucketTemplates, "template", templateKey(kind, name), &st)
	if err != nil {
		return nil, "", err
	}
	return &matchbox.Template{Kind: st.Kind, Name: st.Name, Content: st.Content, Origin: "db"}, tag, nil
}

// PutTemplateIf writes a template if cond holds; it returns the new ETag.
func (b *Bolt) PutTemplateIf(_ context.Context, t *matchbox.Template, cond matchbox.Condition) (string, error) {
	if !validKind(t.Kind) {
		return "", fmt.Errorf("%w: unknown template kind %q", matchbox.ErrInvalid, t.Kind)
	}
	if err := CheckTemplateName(t.Name); err != nil {
		return "", err
	}
	return putIf(b, bucketTemplates, "template", templateKey(t.Kind, t.Name), storedTemplate{t.Kind, t.Name, t.Content}, cond)
}

// DeleteTemplateIf deletes a template if cond holds.
func (b *Bolt) DeleteTemplateIf(_ context.Context, kind matchbox.TemplateKind, name string, cond matchbox.Condition) error {
	return deleteIf(b, bucketTemplates, "template", templateKey(kind, name), cond)
}

// MachinePage returns up to limit machines (0: all) with a MAC after
// after, in MAC order, that keep passes (nil: all), and whether more
// follow.
func (b *Bolt) MachinePage(_ context.Context, after string, limit int, keep func(*matchbox.Machine) bool) ([]*matchbox.Machine, bool, error) {
	var out []*matchbox.Machine
	more := false
	err := b.db.View(func(tx *bolt.Tx) error {
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
func (b *Bolt) SetMachineLabels(_ context.Context, mac string, labels map[string]string) (*matchbox.Machine, error) {
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
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketMachines)
		data := bk.Get([]byte(norm))
		if data == nil {
			return fmt.Errorf("machine %q: %w", norm, matchbox.ErrNotFound)
		}
		if err := decodeMachine(data, &m); err != nil {
			return fmt.Errorf("machine %s: %w", norm, err)
		}
		m.Labels = labels
		return bk.Put([]byte(norm), appendMachine(nil, &m))
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}
