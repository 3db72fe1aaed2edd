// Package releasenotes writes the release notes of the kernel as Markdown: the changes of the
// HTTP API between the released document (api/baseline/kernel.yaml) and the current one, as
// oasdiff reports them (internal/apicompat), and the commits since the last release grouped by
// the issue or the area they name. cmd/release-notes (`make release-notes`) runs it; only that
// command imports it.
package releasenotes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nops-kernel/nops/internal/apicompat"
)

// Commit is one commit of the history.
type Commit struct {
	Hash    string // abbreviated
	Subject string
}

// Notes is what the release notes say.
type Notes struct {
	BaseVersion, Version string             // info.version of the baseline and of the current document
	API                  []apicompat.Change // apicompat.Changelog, most serious first
	Since                string             // the revision the commits start after
	Commits              []Commit           // newest first, as git log lists them
}

// Group is the commits naming one issue or one area.
type Group struct {
	Title   string
	Commits []Commit
}

var (
	// "issue 9", "Issue 3", "issues 5, 6, 7", "issues 5 and 6"
	issueRef = regexp.MustCompile(`(?i)\bissues?\s+(\d+(?:\s*(?:,|and)\s*\d+)*)`)
	number   = regexp.MustCompile(`\d+`)
	// "bench/bus: …", "netguard DoS test: …": the area is the first word before the colon.
	areaRef = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9_.-]*)(?:/[A-Za-z0-9_./-]+)?(?:\s+[^:\s]+){0,4}:\s`)
)

// Groups sorts commits by what they name: the issues ("issue 9", "issues 5, 6" — a commit
// naming several issues makes a group of its own, titled by all of them), else an area, the first
// word before a colon starting the subject ("bench/bus: …" → bench, "netguard DoS test: …" →
// netguard), else Other. Issue groups come first by their first issue, then areas alphabetically,
// then Other; commits oldest first.
func Groups(commits []Commit) []Group {
	type issueGroup struct {
		issues  []int
		commits []Commit
	}
	byIssues := map[string]*issueGroup{}
	byArea := map[string][]Commit{}
	var other []Commit
	for i := len(commits) - 1; i >= 0; i-- {
		c := commits[i]
		if issues := issuesOf(c.Subject); len(issues) > 0 {
			title := issuesTitle(issues)
			g := byIssues[title]
			if g == nil {
				g = &issueGroup{issues: issues}
				byIssues[title] = g
			}
			g.commits = append(g.commits, c)
			continue
		}
		if m := areaRef.FindStringSubmatch(c.Subject); m != nil {
			area := strings.ToLower(m[1])
			byArea[area] = append(byArea[area], c)
			continue
		}
		other = append(other, c)
	}
	titles := slices.SortedFunc(maps.Keys(byIssues), func(a, b string) int {
		return slices.Compare(byIssues[a].issues, byIssues[b].issues)
	})
	var out []Group
	for _, title := range titles {
		out = append(out, Group{Title: title, Commits: byIssues[title].commits})
	}
	for _, a := range slices.Sorted(maps.Keys(byArea)) {
		out = append(out, Group{Title: a, Commits: byArea[a]})
	}
	if len(other) > 0 {
		out = append(out, Group{Title: "Other", Commits: other})
	}
	return out
}

// issuesTitle is "Issue 9" or "Issues 5, 6, 7".
func issuesTitle(issues []int) string {
	s := make([]string, len(issues))
	for i, n := range issues {
		s[i] = strconv.Itoa(n)
	}
	if len(s) == 1 {
		return "Issue " + s[0]
	}
	return "Issues " + strings.Join(s, ", ")
}

// issuesOf returns the issue numbers a subject names, ascending, each once.
func issuesOf(subject string) []int {
	var out []int
	for _, m := range issueRef.FindAllStringSubmatch(subject, -1) {
		for _, s := range number.FindAllString(m[1], -1) {
			if n, err := strconv.Atoi(s); err == nil && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Write renders n as Markdown.
func Write(w io.Writer, n Notes) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Release notes: API %s\n\n", n.Version)
	fmt.Fprintf(&b, "## API changes since %s\n\n", n.BaseVersion)
	if len(n.API) == 0 {
		b.WriteString("No change to the HTTP API.\n\n")
	}
	for _, sec := range []struct {
		level apicompat.Level
		title string
	}{
		{apicompat.Breaking, "Breaking changes"},
		{apicompat.Warning, "Changes that may break clients"},
		{apicompat.Info, "Compatible changes"},
	} {
		var lines []string
		for _, c := range n.API {
			if c.Level != sec.level {
				continue
			}
			if c.Operation != "" {
				lines = append(lines, fmt.Sprintf("- `%s`: %s\n", c.Operation, c.Text))
			} else {
				lines = append(lines, fmt.Sprintf("- %s\n", c.Text))
			}
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n%s\n", sec.title, strings.Join(lines, ""))
	}
	since := n.Since
	if since == "" {
		since = "the beginning"
	}
	fmt.Fprintf(&b, "## Commits since %s\n\n", since)
	groups := Groups(n.Commits)
	if len(groups) == 0 {
		b.WriteString("No commits.\n")
	}
	for i, g := range groups {
		fmt.Fprintf(&b, "### %s\n\n", g.Title)
		for _, c := range g.Commits {
			fmt.Fprintf(&b, "- %s %s\n", c.Hash, c.Subject)
		}
		if i < len(groups)-1 {
			b.WriteString("\n")
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// logFormat separates the fields of a commit with US and the commits with RS: no subject
// contains them.
const logFormat = "--format=%h%x1f%s%x1e"

// ParseLog reads the output of git log with logFormat.
func ParseLog(out []byte) []Commit {
	var commits []Commit
	for _, rec := range bytes.Split(out, []byte{0x1e}) {
		hash, subject, ok := bytes.Cut(bytes.TrimLeft(rec, "\n"), []byte{0x1f})
		if !ok {
			continue
		}
		commits = append(commits, Commit{Hash: string(hash), Subject: strings.TrimSpace(string(subject))})
	}
	return commits
}

// Since returns the revision the release's commits start after: the latest tag reachable from
// HEAD, or else the last commit that changed baseline (the released document; `make
// api-baseline` updates it at each release). It is "" when there is neither.
func Since(ctx context.Context, dir, baseline string) (string, error) {
	if tag, err := git(ctx, dir, "describe", "--tags", "--abbrev=0"); err == nil && tag != "" {
		return tag, nil
	}
	return git(ctx, dir, "log", "-1", "--format=%h", "--", baseline)
}

// Log returns the commits after since up to HEAD (all of HEAD's history when since is ""),
// newest first, merges left out.
func Log(ctx context.Context, dir, since string) ([]Commit, error) {
	args := []string{"log", "--no-merges", logFormat}
	if since != "" {
		args = append(args, since+"..HEAD")
	}
	out, err := gitBytes(ctx, dir, args...)
	if err != nil {
		return nil, err
	}
	return ParseLog(out), nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := gitBytes(ctx, dir, args...)
	return strings.TrimSpace(string(out)), err
}

func gitBytes(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
