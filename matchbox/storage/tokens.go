package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"matchbox.dev/matchbox"
)

// API tokens are stored by name (only their secret's hash); a revoked
// token leaves its hash in tokens_revoked, so that the secret is never
// accepted again. Both are one kind of change, keyed by the token name.

// CreateToken stores a new token; a name already taken is ErrConflict, and
// so is a secret that was revoked before (a revoked secret never comes
// back).
func (db *DB) CreateToken(_ context.Context, t matchbox.Token) error {
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
	return db.update(func(tx kvTx, ch *changeSet) error {
		if rv := tx.Bucket(bucketRevoked).Get([]byte(t.Hash)); rv != nil {
			var old matchbox.RevokedToken
			_ = json.Unmarshal(rv, &old)
			return fmt.Errorf("%w: this token's secret was revoked (as token %q, %s) and is never accepted again: use a new secret", matchbox.ErrConflict, old.Name, old.Revoked.Format(time.RFC3339))
		}
		bk := tx.Bucket(bucketTokens)
		if bk.Get([]byte(t.Name)) != nil {
			return fmt.Errorf("%w: a token named %q exists (revoke it first)", matchbox.ErrConflict, t.Name)
		}
		ch.add(kindToken, t.Name)
		return bk.Put([]byte(t.Name), data)
	})
}

// DeleteToken revokes a token by name: the token is deleted and the hash
// of its secret kept, in one transaction, so that the secret is never
// accepted again.
func (db *DB) DeleteToken(_ context.Context, name string) error {
	return db.update(func(tx kvTx, ch *changeSet) error {
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
		ch.add(kindToken, name)
		return bk.Delete([]byte(name))
	})
}

// RevokedToken returns what is kept of the revoked token whose secret has
// hash, or ErrNotFound when no such token was revoked.
func (db *DB) RevokedToken(_ context.Context, hash string) (matchbox.RevokedToken, error) {
	var rv matchbox.RevokedToken
	err := db.kv.View(func(tx kvTx) error {
		data := tx.Bucket(bucketRevoked).Get([]byte(hash))
		if data == nil {
			return fmt.Errorf("revoked token: %w", matchbox.ErrNotFound)
		}
		return json.Unmarshal(data, &rv)
	})
	return rv, err
}

// Tokens lists the stored tokens by name.
func (db *DB) Tokens(_ context.Context) ([]matchbox.Token, error) {
	out, err := listValues[matchbox.Token](db, bucketTokens)
	slices.SortFunc(out, func(a, b matchbox.Token) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}
