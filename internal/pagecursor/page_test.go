package pagecursor_test

import (
	"strconv"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
)

func TestLimit(t *testing.T) {
	for _, tt := range []struct{ given, want int }{{0, 50}, {1, 1}, {200, 200}} {
		if got, err := pagecursor.Limit(tt.given, 50, 200); err != nil || got != tt.want {
			t.Errorf("Limit(%d) = %d, %v; want %d", tt.given, got, err, tt.want)
		}
	}
	for _, bad := range []int{-1, 201} {
		_, err := pagecursor.Limit(bad, 50, 200)
		if e := errs.As(err); e == nil || len(e.Fields) != 1 || e.Fields[0].Name != "query.limit" {
			t.Errorf("Limit(%d) = %v, want a query.limit problem", bad, err)
		}
	}
}

func TestTrim(t *testing.T) {
	key := func(i int) string { return strconv.Itoa(i) }
	if got, next := pagecursor.Trim([]int{1, 2, 3}, 2, key); len(got) != 2 || next != "2" {
		t.Errorf("Trim over the limit = %v, %q", got, next)
	}
	if got, next := pagecursor.Trim([]int{1, 2}, 2, key); len(got) != 2 || next != "" {
		t.Errorf("Trim at the limit = %v, %q", got, next)
	}
}
