package storagetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// tokenHash is the hash of a token secret the cases revoke.
const tokenHash = "5f2b51ca3ad8c3a5f8e3f0ab4a3f4b9e0c0b7dc1f27a3b6b6e8c51a4cb9f1e77"

func runTokens(t *testing.T, h Harness) {
	t.Run("CreateListDelete", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		created := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		for _, tok := range []matchbox.Token{
			{Name: "zeta", Role: matchbox.RoleAdmin, Hash: "h-zeta", Created: created},
			{Name: "alpha", Role: matchbox.RoleRead, Hash: "h-alpha", Created: created},
		} {
			if err := s.CreateToken(ctx, tok); err != nil {
				t.Fatalf("CreateToken(%s): %v", tok.Name, err)
			}
		}
		if err := s.CreateToken(ctx, matchbox.Token{Name: "alpha", Role: matchbox.RoleAdmin, Hash: "h-other"}); !errors.Is(err, matchbox.ErrConflict) {
			t.Errorf("CreateToken of a name taken: %v, want ErrConflict", err)
		}
		want := []matchbox.Token{
			{Name: "alpha", Role: matchbox.RoleRead, Hash: "h-alpha", Created: created},
			{Name: "zeta", Role: matchbox.RoleAdmin, Hash: "h-zeta", Created: created},
		}
		got, err := s.Tokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Tokens, by name (-want +got):\n%s", diff)
		}
		if err := s.DeleteToken(ctx, "nope"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("DeleteToken of a missing token: %v, want ErrNotFound", err)
		}
		for _, bad := range []matchbox.Token{
			{Name: "", Role: matchbox.RoleRead, Hash: "h"},
			{Name: "with space", Role: matchbox.RoleRead, Hash: "h"},
			{Name: "a/b", Role: matchbox.RoleRead, Hash: "h"},
			{Name: strings.Repeat("n", 129), Role: matchbox.RoleRead, Hash: "h"},
			{Name: "role", Role: "root", Hash: "h"},
		} {
			if err := s.CreateToken(ctx, bad); !errors.Is(err, matchbox.ErrInvalid) {
				t.Errorf("CreateToken(%q, role %q): %v, want ErrInvalid", bad.Name, bad.Role, err)
			}
		}
		if got, _ := s.Tokens(ctx); len(got) != 2 {
			t.Errorf("refused tokens were stored: %+v", got)
		}
	})

	// A revoked token's secret stays revoked: it is remembered across a
	// restart and a new token with it is refused.
	t.Run("RevokedStaysRevoked", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		tok := matchbox.Token{Name: "ci", Role: matchbox.RoleRead, Hash: tokenHash}
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		if _, err := s.RevokedToken(ctx, tokenHash); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("RevokedToken of a live token: %v, want ErrNotFound", err)
		}
		if err := s.DeleteToken(ctx, "ci"); err != nil {
			t.Fatalf("DeleteToken: %v", err)
		}
		if err := s.DeleteToken(ctx, "ci"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("DeleteToken twice: %v, want ErrNotFound", err)
		}
		checkRevoked(t, s)
		if h.Reopen != nil {
			checkRevoked(t, h.Reopen(t))
		}
	})
}

// checkRevoked checks that the token "ci" of tokenHash is revoked.
func checkRevoked(t *testing.T, s storage.Store) {
	t.Helper()
	ctx := t.Context()
	rv, err := s.RevokedToken(ctx, tokenHash)
	if err != nil || rv.Name != "ci" || rv.Hash != tokenHash || rv.Revoked.IsZero() {
		t.Errorf("RevokedToken = %+v, %v; want the revocation of ci", rv, err)
	}
	again := matchbox.Token{Name: "ci-again", Role: matchbox.RoleRead, Hash: tokenHash}
	if err := s.CreateToken(ctx, again); !errors.Is(err, matchbox.ErrConflict) {
		t.Errorf("CreateToken with a revoked secret: %v, want ErrConflict", err)
	}
	if ts, err := s.Tokens(ctx); err != nil || len(ts) != 0 {
		t.Errorf("Tokens after the revocation = %+v, %v; want none", ts, err)
	}
}
