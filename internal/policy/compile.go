package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
)

// Limits of compilation.
const (
	// MaxExpressionLen bounds an expression, in bytes.
	MaxExpressionLen = 8 << 10
	// maxParseDepth bounds the nesting of an expression, so a deeply nested one is refused by
	// the parser instead of exhausting the stack.
	maxParseDepth = 64
	// maxReportedIssues bounds how many compiler messages a refusal lists.
	maxReportedIssues = 5
)

// Defaults of Options.
const (
	DefaultCostLimit               = 10000
	DefaultInterruptCheckFrequency = 100
)

// program is one compiled expression, safe for concurrent evaluation.
type program struct {
	prg cel.Program
	// loops is whether the expression holds a comprehension (all, exists, map, filter, …), the
	// only place an evaluation checks its context for interruption. Programs without one are
	// evaluated without the context, which spares them a cancellable context per evaluation
	// (about 0.5 µs).
	loops bool
	// resourceAttrs is whether the expression may read resource.labels or
	// resource.criticality (or uses resource as a whole): only then must the perimeter load the
	// resource to fill them in.
	resourceAttrs bool
}

// compiler turns expressions into programs. It is immutable after newCompiler and safe for
// concurrent use (cel.Env and cel.Program are).
type compiler struct {
	env            *cel.Env
	costLimit      uint64
	estimatedLimit uint64
	interruptEvery uint
}

// CompileError is a refused expression: the compiler's messages, each "line:column: message".
type CompileError struct {
	Messages []string
}

func (e *CompileError) Error() string { return strings.Join(e.Messages, "; ") }

func newCompiler(costLimit, estimatedLimit uint64, interruptEvery uint) (*compiler, error) {
	env, err := cel.NewEnv(
		// Typed objects with the fields of the `cel` tags; see Input.
		ext.NativeTypes(reflect.TypeFor[Principal](), reflect.TypeFor[Resource](), reflect.TypeFor[Request](), ext.ParseStructTags(true)),
		cel.Variable("principal", cel.ObjectType("policy.Principal")),
		cel.Variable("resource", cel.ObjectType("policy.Resource")),
		cel.Variable("action", cel.StringType),
		cel.Variable("capability", cel.StringType),
		cel.Variable("request", cel.ObjectType("policy.Request")),
		// Helpers: string functions, IP and CIDR (allow-lists), optional values
		// (principal.labels.?team.orValue("")).
		ext.Strings(),
		ext.Network(),
		cel.OptionalTypes(),
		cel.ParserRecursionLimit(maxParseDepth),
		cel.ParserExpressionSizeLimit(MaxExpressionLen),
	)
	if err != nil {
		return nil, fmt.Errorf("policy cel environment: %w", err)
	}
	return &compiler{env: env, costLimit: costLimit, estimatedLimit: estimatedLimit, interruptEvery: interruptEvery}, nil
}

// compile parses and type-checks expr, refuses it unless it is a bool whose estimated cost fits
// the limit, and plans its program. A refusal is a *CompileError; any other error is internal.
func (c *compiler) compile(expr string) (*program, error) {
	if len(expr) > MaxExpressionLen {
		return nil, &CompileError{Messages: []string{fmt.Sprintf("expression is longer than %d bytes", MaxExpressionLen)}}
	}
	if strings.TrimSpace(expr) == "" {
		return nil, &CompileError{Messages: []string{"expression is empty"}}
	}
	ast, iss := c.env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, issuesError(iss)
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, &CompileError{Messages: []string{fmt.Sprintf("expression must be a bool, not %s", t)}}
	}
	est, err := c.env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, &CompileError{Messages: []string{"cost estimate: " + err.Error()}}
	}
	if est.Max > c.estimatedLimit {
		return nil, &CompileError{Messages: []string{fmt.Sprintf(
			"estimated worst-case cost %s exceeds the limit %d (inputs at their documented size bounds); avoid nested comprehensions over inputs",
			costString(est.Max), c.estimatedLimit)}}
	}
	prg, err := c.env.Program(ast,
		cel.CostLimit(c.costLimit),
		cel.InterruptCheckFrequency(c.interruptEvery),
		cel.EvalOptions(cel.OptOptimize), // folds constants such as cidr('10.0.0.0/8') once
	)
	if err != nil {
		// Planning fails on constant arguments that cannot be evaluated, e.g. a malformed
		// regular expression or CIDR: the author's error, not ours.
		return nil, &CompileError{Messages: []string{err.Error()}}
	}
	root := celast.NavigateAST(ast.NativeRep())
	loops := len(celast.MatchDescendants(root, celast.KindMatcher(celast.ComprehensionKind))) > 0
	attrs := len(celast.MatchDescendants(root, readsResourceAttrs)) > 0
	return &program{prg: prg, loops: loops, resourceAttrs: attrs}, nil
}

// readsResourceAttrs matches a reference to the resource variable that is not a selection of a
// field other than labels and criticality: resource.labels, resource.criticality, or resource
// passed whole (to a macro or function, which might read anything).
func readsResourceAttrs(e celast.NavigableExpr) bool {
	if e.Kind() != celast.IdentKind || e.AsIdent() != "resource" {
		return false
	}
	p, ok := e.Parent()
	if !ok || p.Kind() != celast.SelectKind {
		return true
	}
	f := p.AsSelect().FieldName()
	return f == "labels" || f == "criticality"
}

func costString(c uint64) string {
	if c == ^uint64(0) {
		return "unbounded"
	}
	return fmt.Sprint(c)
}

// issuesError renders the compiler's issues as "line:column: message" (1-based, as cel-go
// displays them), without the source snippets: the author has the source.
func issuesError(iss *cel.Issues) error {
	var msgs []string
	for i, e := range iss.Errors() {
		if i == maxReportedIssues {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(iss.Errors())-i))
			break
		}
		msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
	}
	if len(msgs) == 0 {
		msgs = []string{iss.Err().Error()}
	}
	return &CompileError{Messages: msgs}
}

// costExceeded reports whether err is the runtime cost limit cutting an evaluation off.
func costExceeded(err error) bool {
	var c interpreter.EvalCancelledError
	return errors.As(err, &c) && c.Cause == interpreter.CostLimitExceeded
}

// sizeEstimator gives the checker's cost estimate the size bounds of the inputs (sizeHints), so
// an expression iterating over principal.scopes is estimated for 64 scopes, not for an unbounded
// list.
type sizeEstimator struct{}

func (sizeEstimator) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

func (sizeEstimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	key := strings.Join(path, ".")
	size, ok := sizeHints[key]
	if !ok {
		return nil
	}
	est := cost.RangedSizeEstimate(0, size)
	if items, ok := sizeHints[key+".@items"]; ok {
		est = cost.ListSizeEstimate(est, cost.RangedSizeEstimate(0, items))
	}
	if keys, ok := sizeHints[key+".@keys"]; ok {
		est = cost.MapSizeEstimate(est, cost.RangedSizeEstimate(0, keys), cost.RangedSizeEstimate(0, sizeHints[key+".@values"]))
	}
	return &est
}
