package pagecursor

import (
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
)

// Limit returns the page size a list operation uses: def when given is 0, given when it is in
// 1..max, else an errs.Field("query.limit"). Stores are then asked for Limit+1 items: the extra
// one tells whether a next page exists without a second query (see Trim).
func Limit(given, def, max int) (int, error) {
	if given == 0 {
		given = def
	}
	if given < 1 || given > max {
		return 0, errs.Field("query.limit", fmt.Sprintf("must be between 1 and %d", max))
	}
	return given, nil
}

// Trim cuts items, read with limit+1, to limit and returns the next page's cursor: the key of
// the last item kept, or "" when items held no more than limit.
func Trim[T any](items []T, limit int, key func(T) string) ([]T, string) {
	if len(items) <= limit {
		return items, ""
	}
	items = items[:limit]
	return items, key(items[limit-1])
}
