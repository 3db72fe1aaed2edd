package degrade

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Markers around the generated part of docs/criticality.md; the prose around them is written
// by hand.
const (
	DocBegin = "<!-- BEGIN GENERATED: go test ./internal/degrade -run CriticalityDoc -update -->"
	DocEnd   = "<!-- END GENERATED -->"
)

// MatrixDoc renders the matrix tables of docs/criticality.md from Routes, Capabilities and
// Consumers, and what each mode does to each class.
func MatrixDoc() string {
	var b strings.Builder
	b.WriteString(DocBegin + "\n\n")
	b.WriteString("### What each mode does to each class\n\n| class | read_only | bus_down | shed_best_effort |\n|---|---|---|---|\n")
	b.WriteString("| critical | reads served; writes 503 + Retry-After | served; events wait in the outbox | served |\n")
	b.WriteString("| essential | reads served; writes 503 + Retry-After | served; events wait in the outbox | served (the in-flight gate sheds essential requests only above `essential_max`) |\n")
	b.WriteString("| best_effort | reads served; writes 503 + Retry-After | served; events wait in the outbox | 503 + Retry-After |\n\n")

	b.WriteString("### Routes\n\n| operation | class | write | why |\n|---|---|---|---|\n")
	patterns := slices.SortedFunc(maps.Keys(Routes), func(a, b string) int {
		_, pa, _ := strings.Cut(a, " ")
		_, pb, _ := strings.Cut(b, " ")
		return strings.Compare(pa+" "+a, pb+" "+b)
	})
	for _, p := range patterns {
		r := Routes[p]
		w := "no"
		if r.Write {
			w = "yes"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", p, r.Class, w, r.Why)
	}

	b.WriteString("\n### Capabilities (by the agent's `criticality`)\n\n| class | in degraded modes |\n|---|---|\n")
	for _, c := range []Class{Critical, Essential, BestEffort} {
		fmt.Fprintf(&b, "| %s | %s |\n", c, Capabilities[c])
	}

	b.WriteString("\n### Event consumers\n\n| consumer | class | writes | why |\n|---|---|---|---|\n")
	for _, name := range slices.Sorted(maps.Keys(Consumers)) {
		r := Consumers[name]
		shown := "`" + name + "`"
		if strings.HasSuffix(name, "-") {
			shown = "`" + name + "<replica>`"
		}
		w := "no"
		if r.Write {
			w = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", shown, r.Class, w, r.Why)
	}
	b.WriteString("\n" + DocEnd + "\n")
	return b.String()
}
