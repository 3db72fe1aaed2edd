package httpapi

import "strings"

// concretePath fills every {wildcard} of a spec path with a sample segment, giving a path that
// the route matches: used to check routes at start-up and, in tests, to call every operation.
func concretePath(path string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(path, '{')
		if i < 0 {
			b.WriteString(path)
			return b.String()
		}
		j := strings.IndexByte(path[i:], '}')
		if j < 0 {
			b.WriteString(path)
			return b.String()
		}
		b.WriteString(path[:i])
		b.WriteString("x")
		path = path[i+j+1:]
	}
}
