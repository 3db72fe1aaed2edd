package releasenotes

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/apicompat"
)

var update = flag.Bool("update", false, "rewrite testdata/notes.md")

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureLog is testdata/commits.txt ("<hash> <subject>" lines, newest first) as git log prints
// it with logFormat.
func fixtureLog(t *testing.T) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(strings.TrimSpace(string(read(t, "commits.txt"))), "\n") {
		hash, subject, _ := strings.Cut(line, " ")
		out.WriteString(hash + "\x1f" + subject + "\x1e\n")
	}
	return out.Bytes()
}

// TestNotes renders the notes of the fixtures (a removed response property, an added parameter
// and operation, a deprecation; commits naming issues and areas) and compares them with
// testdata/notes.md; go test -update rewrites it.
func TestNotes(t *testing.T) {
	var n Notes
	var err error
	n.BaseVersion, n.Version, n.API, err = apicompat.Changelog(read(t, "base.yaml"), read(t, "rev.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n.Since = "v0.1.0"
	n.Commits = ParseLog(fixtureLog(t))
	var got bytes.Buffer
	if err := Write(&got, n); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("testdata/notes.md", got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(string(read(t, "notes.md")), got.String()); diff != "" {
		t.Errorf("release notes (-want +got):\n%s", diff)
	}
	// The removed field is reported as breaking, first.
	if !strings.Contains(got.String(), "### Breaking changes\n\n- `GET /v1/things/{id}`: removed the required property `name`") {
		t.Error("the removed response property is not listed as breaking")
	}
}

func TestNotesWithoutChanges(t *testing.T) {
	var got bytes.Buffer
	if err := Write(&got, Notes{BaseVersion: "0.1.0", Version: "0.1.0"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"No change to the HTTP API.", "## Commits since the beginning", "No commits."} {
		if !strings.Contains(got.String(), want) {
			t.Errorf("%q missing from:\n%s", want, got.String())
		}
	}
}

func TestGroups(t *testing.T) {
	got := Groups(ParseLog(fixtureLog(t)))
	var titles []string
	hashes := map[string][]string{}
	for _, g := range got {
		titles = append(titles, g.Title)
		for _, c := range g.Commits {
			hashes[g.Title] = append(hashes[g.Title], c.Hash)
		}
	}
	if diff := cmp.Diff([]string{"Issue 3", "Issues 5, 6, 7", "Issue 9", "bench", "netguard", "Other"}, titles); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	// Oldest first within a group.
	if diff := cmp.Diff([]string{"aaaaaa0", "aaaaaa2"}, hashes["Issue 3"]); diff != "" {
		t.Errorf("issue 3 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"aaaaaa1", "aaaaaa4"}, hashes["bench"]); diff != "" {
		t.Errorf("bench (-want +got):\n%s", diff)
	}
}

func TestIssuesOf(t *testing.T) {
	for subject, want := range map[string][]int{
		"x (issue 9, point 7)":             {9},
		"Issue 3 tests":                    {3},
		"done (issues 7, 5, 6)":            {5, 6, 7},
		"issues 4 and 2; also issue 4":     {2, 4},
		"tissue 5 is not an issue":         nil,
		"reissues nothing: issue number 1": nil,
	} {
		if diff := cmp.Diff(want, issuesOf(subject)); diff != "" {
			t.Errorf("issuesOf(%q) (-want +got):\n%s", subject, diff)
		}
	}
}

func TestParseLog(t *testing.T) {
	got := ParseLog([]byte("abc\x1fsubject one\x1e\ndef\x1f  two: with: colons \x1e\n\nnot a record"))
	want := []Commit{{"abc", "subject one"}, {"def", "two: with: colons"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestGitHistory runs Since and Log on a repository made for the test: without a tag the commits
// start after the baseline's last change, with one after the tag.
func TestGitHistory(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	ctx := context.Background()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	commit := func(file, subject string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, file)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(subject), 0o644); err != nil {
			t.Fatal(err)
		}
		run("add", file)
		run("commit", "-q", "-m", subject)
	}
	run("init", "-q")
	commit("a.txt", "first: before the release")
	commit("api/baseline/kernel.yaml", "release the API (issue 1)")
	commit("b.txt", "area: after the release")
	commit("c.txt", "more (issue 2)")

	since, err := Since(ctx, dir, "api/baseline/kernel.yaml")
	if err != nil || since == "" {
		t.Fatalf("since %q, %v", since, err)
	}
	commits, err := Log(ctx, dir, since)
	if err != nil {
		t.Fatal(err)
	}
	if len(commits) != 2 || commits[0].Subject != "more (issue 2)" || commits[1].Subject != "area: after the release" {
		t.Errorf("commits after the baseline: %+v", commits)
	}

	run("tag", "v0.2.0")
	commit("d.txt", "after the tag")
	if since, err = Since(ctx, dir, "api/baseline/kernel.yaml"); err != nil || since != "v0.2.0" {
		t.Fatalf("since %q, %v; want the tag", since, err)
	}
	if commits, err = Log(ctx, dir, since); err != nil || len(commits) != 1 || commits[0].Subject != "after the tag" {
		t.Errorf("commits after the tag: %+v, %v", commits, err)
	}
	if _, err := Log(ctx, dir, "no-such-revision"); err == nil {
		t.Error("an unknown revision was accepted")
	}
}
