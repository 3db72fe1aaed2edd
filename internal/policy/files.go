package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/nops-kernel/nops/internal/errs"
)

// maxFileSize bounds one policy file.
const maxFileSize = 4 << 20

// FilePolicy is a policy read from a file.
type FilePolicy struct {
	File   string // the file's name, for messages
	Policy Policy
}

// TestCase is one policy test of a file: an input and the decision expected for it.
type TestCase struct {
	File   string `yaml:"-"`
	Name   string `yaml:"name"`
	Input  Input  `yaml:"input"`
	Expect string `yaml:"expect"` // "allow" or "deny"
	// Policy, when set, is the ID or name of the policy expected to decide (Decision.PolicyID
	// or PolicyName): the deny policy that denied, or the allow policy that allowed.
	Policy string `yaml:"policy"`
}

// Dir is what the policy files of a directory hold.
type Dir struct {
	Policies []FilePolicy
	Tests    []TestCase
}

// fileDoc is the format of one file. Unknown fields are refused, so a misspelt key is an error
// rather than a silently ignored setting.
type fileDoc struct {
	Policies []filePolicy `yaml:"policies"`
	Tests    []TestCase   `yaml:"tests"`
}

type filePolicy struct {
	ID          string `yaml:"id"`
	Tenant      string `yaml:"tenant"`
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Effect      Effect `yaml:"effect"`
	Expression  string `yaml:"expression"`
	Enabled     *bool  `yaml:"enabled"`
}

// ReadDir reads every *.yaml and *.yml file directly in dir (not in subdirectories), in name
// order, and checks what it reads: the fields of each policy, unique IDs, unique names per
// tenant, well-formed test cases. It does not compile expressions (Engine.SetFilePolicies
// does). Errors name the file and the policy or test.
func ReadDir(dir string) (Dir, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Dir{}, fmt.Errorf("read policy directory: %w", err)
	}
	var (
		out  Dir
		errL []error
	)
	for _, ent := range entries {
		name := ent.Name()
		if ent.IsDir() || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		data, err := readFile(filepath.Join(dir, name))
		if err != nil {
			errL = append(errL, err)
			continue
		}
		d, err := ParseFile(name, data)
		if err != nil {
			errL = append(errL, err)
			continue
		}
		out.Policies = append(out.Policies, d.Policies...)
		out.Tests = append(out.Tests, d.Tests...)
	}
	errL = append(errL, checkUnique(out.Policies)...)
	if err := errors.Join(errL...); err != nil {
		return Dir{}, err
	}
	return out, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy file %s: %w", filepath.Base(path), err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", filepath.Base(path), maxFileSize)
	}
	return data, nil
}

// ParseFile parses one policy file named name (for messages) and checks each policy's fields
// and each test case's shape. It neither compiles expressions nor checks uniqueness across files.
func ParseFile(name string, data []byte) (Dir, error) {
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return Dir{}, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Dir{}, fmt.Errorf("%s: one YAML document per file", name)
	}
	var (
		out  Dir
		errL []error
	)
	for i, fp := range doc.Policies {
		where := fmt.Sprintf("%s:%s", name, fp.Name)
		if fp.Name == "" {
			where = fmt.Sprintf("%s:policies[%d]", name, i)
		}
		p, err := fp.policy()
		if err != nil {
			errL = append(errL, fmt.Errorf("%s: %w", where, err))
			continue
		}
		out.Policies = append(out.Policies, FilePolicy{File: name, Policy: p})
	}
	for i, tc := range doc.Tests {
		tc.File = name
		where := fmt.Sprintf("%s:tests[%d]", name, i)
		switch {
		case tc.Name == "":
			errL = append(errL, fmt.Errorf("%s: name is required", where))
			continue
		case tc.Expect != "allow" && tc.Expect != "deny":
			errL = append(errL, fmt.Errorf("%s:%s: expect must be allow or deny", name, tc.Name))
			continue
		}
		tc.Input.Request.Time = tc.Input.Request.Time.UTC()
		out.Tests = append(out.Tests, tc)
	}
	if err := errors.Join(errL...); err != nil {
		return Dir{}, err
	}
	return out, nil
}

// policy checks fp and returns it as a Policy. The ID defaults to "file:" + name.
func (fp filePolicy) policy() (Policy, error) {
	spec := Spec{Name: fp.Name, Description: fp.Description, Effect: fp.Effect, Expression: fp.Expression, Enabled: fp.Enabled}
	if err := spec.validate(""); err != nil {
		return Policy{}, fieldsError(err)
	}
	id := fp.ID
	if id == "" {
		id = "file:" + fp.Name
	}
	switch {
	case strings.HasPrefix(id, IDPrefix):
		return Policy{}, fmt.Errorf("id must not start with %q, which stored policies use", IDPrefix)
	case !validRef(strings.TrimPrefix(id, "file:"), 128, true):
		return Policy{}, errors.New("id must be 1..128 characters, without control characters")
	case fp.Tenant != "" && !validRef(fp.Tenant, 64, false):
		return Policy{}, errors.New("tenant must be 1..64 characters of [A-Za-z0-9_-]")
	}
	return Policy{
		ID: id, TenantID: fp.Tenant, Name: fp.Name, Description: fp.Description, Effect: fp.Effect,
		Expression: fp.Expression, Enabled: spec.enabled(), Version: 1,
	}, nil
}

// fieldsError renders an errs.Invalid's fields as one plain error for a file's reader.
func fieldsError(err error) error {
	var msgs []string
	if e := errs.As(err); e != nil && len(e.Fields) > 0 {
		for _, f := range e.Fields {
			msgs = append(msgs, f.Name+": "+f.Reason)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return err
}

// validRef reports whether s is 1..maxLen bytes of [A-Za-z0-9_-], or, when free, of anything
// printable.
func validRef(s string, maxLen int, free bool) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	if free {
		return textProblem(s, maxLen, false) == ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkUnique refuses two file policies with one ID, or with one name in one tenant.
func checkUnique(ps []FilePolicy) []error {
	var errL []error
	ids := map[string]string{}
	type key struct{ tenant, name string }
	names := map[key]string{}
	for _, fp := range ps {
		p := fp.Policy
		if other, ok := ids[p.ID]; ok {
			errL = append(errL, fmt.Errorf("%s:%s: id %q is also used in %s", fp.File, p.Name, p.ID, other))
		} else {
			ids[p.ID] = fp.File
		}
		k := key{p.TenantID, p.Name}
		if other, ok := names[k]; ok {
			errL = append(errL, fmt.Errorf("%s:%s: name is also used in %s for the same tenant", fp.File, p.Name, other))
		} else {
			names[k] = fp.File
		}
	}
	return errL
}
