package httpapi

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The risk matrix of docs/threat-model.md cites the tests that show each mitigation as
// `path/to/file_test.go` `TestName`; risk IDs are a STRIDE letter, a hyphen and two digits.
var (
	threatCitation = regexp.MustCompile("`([^`\\s]+_test\\.go)`\\s+`((?:Test|Fuzz|Benchmark|Example)\\w*)`")
	threatRiskID   = regexp.MustCompile(`\b[STRIDE]-\d{2}\b`)
	threatTotals   = regexp.MustCompile(`(?m)^Totals: (\d+) risks — (\d+) mitigated, (\d+) accepted, (\d+) open\.$`)
)

// TestThreatModelDoc keeps docs/threat-model.md true: every test its risk matrix cites is
// declared in the file it names, every risk has a known status and a mitigated one cites a test,
// every risk ID the page uses is a row of the matrix, every row is tied to an element in the
// STRIDE tables, and the totals line counts the rows.
func TestThreatModelDoc(t *testing.T) {
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "docs", "threat-model.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	before, matrix, ok := strings.Cut(doc, "\n## Risk matrix\n")
	if !ok {
		t.Fatal(`docs/threat-model.md has no "## Risk matrix" section`)
	}
	after := ""
	if i := strings.Index(matrix, "\n## "); i >= 0 {
		matrix, after = matrix[:i], matrix[i:]
	}
	rows := threatRows(t, matrix)
	if len(rows) == 0 {
		t.Fatal("the risk matrix has no rows")
	}

	sources := map[string]string{} // cited file → its text; "" when missing
	counts := map[string]int{}
	ids := map[string]bool{}
	for _, r := range rows {
		if ids[r.id] {
			t.Errorf("%s: the risk matrix lists it twice", r.id)
		}
		ids[r.id] = true
		switch r.status {
		case "mitigated", "accepted", "open":
			counts[r.status]++
		default:
			t.Errorf("%s: status %q, want mitigated, accepted or open", r.id, r.status)
		}
		if strings.TrimSpace(r.mitigation) == "" {
			t.Errorf("%s: no mitigation or reason", r.id)
		}
		cites := threatCitation.FindAllStringSubmatch(r.evidence, -1)
		if n := strings.Count(r.evidence, "_test.go`"); n != len(cites) {
			t.Errorf("%s: %d test files cited but %d `file_test.go` `TestName` pairs: %s", r.id, n, len(cites), r.evidence)
		}
		if r.status == "mitigated" && len(cites) == 0 {
			t.Errorf("%s: mitigated, but its evidence cites no test", r.id)
		}
		for _, c := range cites {
			file, name := c[1], c[2]
			src, seen := sources[file]
			if !seen {
				if b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file))); err == nil {
					src = string(b)
				}
				sources[file] = src
			}
			if src == "" {
				t.Errorf("%s cites %s, which does not exist", r.id, file)
				continue
			}
			if !regexp.MustCompile(`(?m)^func ` + name + `\(`).MatchString(src) {
				where := threatDeclaredIn(t, root, name)
				t.Errorf("%s cites %s in %s, which does not declare it (declared in: %s)", r.id, name, file, where)
			}
		}
	}

	outside := before + after
	for _, id := range threatRiskID.FindAllString(outside, -1) {
		if !ids[id] {
			t.Errorf("%s is used on the page but is not a row of the risk matrix", id)
		}
	}
	for _, r := range rows {
		if !regexp.MustCompile(`\b` + r.id + `\b`).MatchString(outside) {
			t.Errorf("%s is tied to no element: name it in a STRIDE table", r.id)
		}
	}

	m := threatTotals.FindStringSubmatch(doc)
	if m == nil {
		t.Fatal(`docs/threat-model.md has no line "Totals: N risks — M mitigated, A accepted, O open."`)
	}
	want := []int{len(rows), counts["mitigated"], counts["accepted"], counts["open"]}
	for i, w := range want {
		if got, _ := strconv.Atoi(m[i+1]); got != w {
			t.Errorf("totals line %q, want %d risks — %d mitigated, %d accepted, %d open", m[0], want[0], want[1], want[2], want[3])
			break
		}
	}
}

type threatRow struct {
	id, mitigation, evidence, status string
}

// threatRows parses the risk matrix: the table whose header has the columns ID, mitigation,
// evidence and status.
func threatRows(t *testing.T, section string) []threatRow {
	t.Helper()
	var cols map[string]int
	var rows []threatRow
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := threatCells(line)
		if cols == nil {
			cols = map[string]int{}
			for i, c := range cells {
				cols[strings.ToLower(c)] = i
			}
			for _, need := range []string{"id", "mitigation", "evidence", "status"} {
				if _, ok := cols[need]; !ok {
					t.Fatalf("the risk matrix's header %q lacks the column %q", line, need)
				}
			}
			continue
		}
		if strings.Trim(line, "|-: ") == "" {
			continue // the separator row
		}
		if len(cells) != len(cols) {
			t.Errorf("risk matrix row has %d cells, the header %d: %s", len(cells), len(cols), line)
			continue
		}
		r := threatRow{id: cells[cols["id"]], mitigation: cells[cols["mitigation"]],
			evidence: cells[cols["evidence"]], status: cells[cols["status"]]}
		if !threatRiskID.MatchString(r.id) || threatRiskID.FindString(r.id) != r.id {
			t.Errorf("risk ID %q is not a STRIDE letter, a hyphen and two digits", r.id)
		}
		rows = append(rows, r)
	}
	return rows
}

// threatCells splits a Markdown table row on the pipes that are not escaped.
func threatCells(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// threatDeclaredIn names the test files of the repository that declare func name, for the
// message of a citation pointing at the wrong file.
func threatDeclaredIn(t *testing.T, root, name string) string {
	t.Helper()
	decl := regexp.MustCompile(`(?m)^func ` + name + `\(`)
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if decl.Match(b) {
			rel, _ := filepath.Rel(root, path)
			found = append(found, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Errorf("search the repository for %s: %v", name, err)
	}
	if len(found) == 0 {
		return "nowhere"
	}
	return strings.Join(found, ", ")
}
