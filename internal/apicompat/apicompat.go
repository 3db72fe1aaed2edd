// Package apicompat is the gate on the evolution of the kernel's HTTP API: it compares the
// OpenAPI document of a revision with the baseline (the last released document, api/baseline)
// using oasdiff's backward-compatibility checks, and reports the breaking changes a revision may
// not make unless it is versioned — its info.version moved to a new major version (a new minor
// version while the major is 0, as semantic versioning allows). Changelog lists every change,
// breaking or not, for the release notes (cmd/release-notes).
package apicompat

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/oasdiff/oasdiff/checker"
	"github.com/oasdiff/oasdiff/diff"
	"github.com/oasdiff/oasdiff/load"
)

// Report is the outcome of comparing a revision with the baseline.
type Report struct {
	// Breaking lists the breaking changes (oasdiff level error), one line each.
	Breaking []string
	// Warnings lists the changes oasdiff reports as possibly breaking (level warning).
	Warnings []string
	// Versioned is true when the revision's info.version is a new major version of the
	// baseline's (a new minor for 0.x): breaking changes are allowed then.
	Versioned bool
	// BaseVersion and Version are the documents' info.version.
	BaseVersion, Version string
}

// Refused reports whether the gate refuses the revision: breaking changes without a new version.
func (r Report) Refused() bool { return len(r.Breaking) > 0 && !r.Versioned }

// Compare checks the OpenAPI document rev against base.
func Compare(base, rev []byte) (Report, error) {
	b, r, changes, err := check(base, rev, checker.WARN)
	if err != nil {
		return Report{}, err
	}
	rep := Report{BaseVersion: version(b), Version: version(r)}
	rep.Versioned, err = newVersion(rep.BaseVersion, rep.Version)
	if err != nil {
		return Report{}, err
	}
	l := checker.NewDefaultLocalizer()
	for _, c := range changes {
		line := c.SingleLineError(l, checker.ColorNever)
		switch c.GetLevel() {
		case checker.ERR:
			rep.Breaking = append(rep.Breaking, line)
		case checker.WARN:
			rep.Warnings = append(rep.Warnings, line)
		}
	}
	return rep, nil
}

// Level classes a change for its readers.
type Level string

// The levels, oasdiff's error, warning and info.
const (
	Breaking Level = "breaking" // breaks clients of base
	Warning  Level = "warning"  // may break some clients: read it
	Info     Level = "info"     // compatible: additions, deprecations, documentation
)

// Change is one difference between two documents, as a changelog lists it.
type Change struct {
	Level     Level
	Operation string // "GET /v1/agents/{id}"; "" for a change outside the paths (components)
	Text      string // oasdiff's sentence, without colours
}

// Changelog lists every difference between base and rev that oasdiff reports (breaking,
// possibly breaking and compatible ones), the most serious first, then by operation. It is what
// the release notes (cmd/release-notes) print.
func Changelog(base, rev []byte) (from, to string, changes []Change, err error) {
	b, r, found, err := check(base, rev, checker.INFO)
	if err != nil {
		return "", "", nil, err
	}
	l := checker.NewDefaultLocalizer()
	for _, c := range found {
		ch := Change{Level: Info, Text: c.GetUncolorizedText(l)}
		switch c.GetLevel() {
		case checker.ERR:
			ch.Level = Breaking
		case checker.WARN:
			ch.Level = Warning
		}
		if c.GetOperation() != "" {
			ch.Operation = c.GetOperation() + " " + c.GetPath()
		}
		changes = append(changes, ch)
	}
	rank := map[Level]int{Breaking: 0, Warning: 1, Info: 2}
	slices.SortStableFunc(changes, func(x, y Change) int {
		return cmp.Or(cmp.Compare(rank[x.Level], rank[y.Level]), cmp.Compare(x.Operation, y.Operation), cmp.Compare(x.Text, y.Text))
	})
	return version(b), version(r), slices.Compact(changes), nil
}

// check loads both documents and runs oasdiff's checks down to level.
func check(base, rev []byte, level checker.Level) (b, r *load.SpecInfo, changes checker.Changes, err error) {
	b, err = load.NewSpecInfoFromData(openapi3.NewLoader(), base, "baseline")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load the baseline: %w", err)
	}
	r, err = load.NewSpecInfoFromData(openapi3.NewLoader(), rev, "revision")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load the revision: %w", err)
	}
	d, sources, err := diff.GetPathsDiff(diff.NewConfig(), []*load.SpecInfo{b}, []*load.SpecInfo{r})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("diff: %w", err)
	}
	return b, r, checker.CheckBackwardCompatibilityUntilLevel(checker.NewConfig(checker.GetAllChecks()), d, sources, level), nil
}

func version(s *load.SpecInfo) string {
	if s.Spec == nil || s.Spec.Info == nil {
		return ""
	}
	return s.Spec.Info.Version
}

// newVersion reports whether rev is a new major version of base (a new minor one for 0.x).
func newVersion(base, rev string) (bool, error) {
	bMaj, bMin, err := majorMinor(base)
	if err != nil {
		return false, fmt.Errorf("baseline info.version: %w", err)
	}
	rMaj, rMin, err := majorMinor(rev)
	if err != nil {
		return false, fmt.Errorf("revision info.version: %w", err)
	}
	if bMaj == 0 && rMaj == 0 {
		return rMin > bMin, nil
	}
	return rMaj > bMaj, nil
}

func majorMinor(v string) (int, int, error) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("%q is not a semantic version", v)
	}
	maj, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || maj < 0 || minor < 0 {
		return 0, 0, fmt.Errorf("%q is not a semantic version", v)
	}
	return maj, minor, nil
}
