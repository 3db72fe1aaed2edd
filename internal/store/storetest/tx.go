package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

// testTransactions checks InTx: writes of several domains made with the context it hands out
// commit together or not at all, reads inside see the transaction's own writes, and nested calls
// join the outer transaction.
func testTransactions(t *testing.T, open func(t *testing.T) Store) {
	ctx := t.Context()
	newUser := func(name string) user.User {
		return user.User{ID: "usr_" + name, Username: name, PasswordHash: []byte("h"), CreatedAt: base, UpdatedAt: base}
	}
	newKey := func(id string) token.SigningKey {
		return token.SigningKey{ID: id, Algorithm: "EdDSA", Private: []byte("k"), CreatedAt: base}
	}
	exists := func(t *testing.T, s Store, name string) bool {
		t.Helper()
		_, err := s.UserByUsername(ctx, name)
		if err != nil && !errs.Is(err, errs.NotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	keyCount := func(t *testing.T, s Store) int {
		t.Helper()
		keys, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}

	t.Run("commit", func(t *testing.T) {
		s := open(t)
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.CreateUser(ctx, newUser("committed")); err != nil {
				return err
			}
			if !exists(t, txView{s, ctx}, "committed") {
				t.Error("a read inside the transaction does not see its own write")
			}
			return s.CreateSigningKey(ctx, newKey("key_committed"))
		})
		if err != nil {
			t.Fatal(err)
		}
		if !exists(t, s, "committed") || keyCount(t, s) != 1 {
			t.Fatal("committed writes are not visible")
		}
	})

	t.Run("rollback on error", func(t *testing.T) {
		s := open(t)
		boom := errors.New("boom")
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.CreateUser(ctx, newUser("rolled")); err != nil {
				return err
			}
			if err := s.CreateSigningKey(ctx, newKey("key_rolled")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want the callback's error", err)
		}
		if exists(t, s, "rolled") || keyCount(t, s) != 0 {
			t.Fatal("a rolled-back write is visible")
		}
	})

	t.Run("rollback on a failing statement", func(t *testing.T) {
		s := open(t)
		if err := s.CreateUser(ctx, newUser("taken")); err != nil {
			t.Fatal(err)
		}
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.CreateSigningKey(ctx, newKey("key_orphan")); err != nil {
				return err
			}
			return s.CreateUser(ctx, newUser("taken")) // conflict
		})
		if !errs.Is(err, errs.Conflict) {
			t.Fatalf("InTx = %v, want Conflict", err)
		}
		if keyCount(t, s) != 0 {
			t.Fatal("the write before the failing statement survived")
		}
	})

	t.Run("nested joins", func(t *testing.T) {
		s := open(t)
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.InTx(ctx, func(ctx context.Context) error { return s.CreateUser(ctx, newUser("inner")) }); err != nil {
				return err
			}
			return errors.New("outer fails")
		})
		if err == nil {
			t.Fatal("outer error lost")
		}
		if exists(t, s, "inner") {
			t.Fatal("the nested write committed on its own")
		}
	})

	t.Run("panic rolls back", func(t *testing.T) {
		s := open(t)
		func() {
			defer func() { _ = recover() }()
			_ = s.InTx(ctx, func(ctx context.Context) error {
				if err := s.CreateUser(ctx, newUser("panicked")); err != nil {
					return err
				}
				panic("handler bug")
			})
		}()
		if exists(t, s, "panicked") {
			t.Fatal("a write before a panic committed")
		}
		// The store is still usable: the connection was released.
		if err := s.CreateUser(ctx, newUser("after")); err != nil {
			t.Fatal(err)
		}
	})
}

// txView reads through the transaction's context, so exists() can be reused inside InTx.
type txView struct {
	Store
	ctx context.Context
}

func (v txView) UserByUsername(_ context.Context, name string) (user.User, error) {
	return v.Store.UserByUsername(v.ctx, name)
}
