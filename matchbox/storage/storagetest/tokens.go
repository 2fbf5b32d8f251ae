package storagetest

import (
	"context"
	"errors"
	"testing"

	"matchbox.dev/matchbox"
)

// TokenStore is what a store that keeps API tokens offers.
type TokenStore interface {
	CreateToken(ctx context.Context, t matchbox.Token) error
	DeleteToken(ctx context.Context, name string) error
	Tokens(ctx context.Context) ([]matchbox.Token, error)
	RevokedToken(ctx context.Context, hash string) (matchbox.RevokedToken, error)
}

// runTokens checks that a revoked token's secret stays revoked: it is
// remembered across a restart and a new token with it is refused.
// s is the store h opened last for t.
func runTokens(t *testing.T, h Harness, s TokenStore) {
	ctx := t.Context()
	const hash = "5f2b51ca3ad8c3a5f8e3f0ab4a3f4b9e0c0b7dc1f27a3b6b6e8c51a4cb9f1e77"
	tok := matchbox.Token{Name: "ci", Role: matchbox.RoleRead, Hash: hash}
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if _, err := s.RevokedToken(ctx, hash); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("RevokedToken of a live token: %v, want ErrNotFound", err)
	}
	if err := s.DeleteToken(ctx, "ci"); err != nil {
		t.Fatalf("DeleteToken: %v", err)
	}
	if err := s.DeleteToken(ctx, "ci"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("DeleteToken twice: %v, want ErrNotFound", err)
	}
	check := func(t *testing.T, s TokenStore) {
		t.Helper()
		rv, err := s.RevokedToken(ctx, hash)
		if err != nil || rv.Name != "ci" || rv.Hash != hash || rv.Revoked.IsZero() {
			t.Errorf("RevokedToken = %+v, %v; want the revocation of ci", rv, err)
		}
		again := tok
		again.Name = "ci-again"
		if err := s.CreateToken(ctx, again); !errors.Is(err, matchbox.ErrConflict) {
			t.Errorf("CreateToken with a revoked secret: %v, want ErrConflict", err)
		}
		if ts, err := s.Tokens(ctx); err != nil || len(ts) != 0 {
			t.Errorf("Tokens after the revocation = %+v, %v; want none", ts, err)
		}
	}
	check(t, s)
	if h.Reopen == nil {
		return
	}
	r, ok := h.Reopen(t).(TokenStore)
	if !ok {
		t.Fatal("the reopened store keeps no tokens")
	}
	check(t, r)
}
