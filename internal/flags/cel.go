package flags

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
)

// Limits of a rule's expression.
const (
	MaxExpressionLen = 4 << 10
	maxParseDepth    = 32
	// costLimit bounds one evaluation of one rule; flag rules are small comparisons over a
	// tenant's attributes, so this is generous.
	costLimit = 10000
)

// Tenant is what a rule's expression sees of the tenant it is evaluated for, as `tenant`:
// tenant.id, tenant.name, tenant.status. Name and Status are "" when the evaluator could not
// resolve the tenant (an OpenFeature caller gave only the targeting key and there is no
// TenantResolver).
type Tenant struct {
	ID     string `cel:"id"`
	Name   string `cel:"name"`
	Status string `cel:"status"`
}

// Rules see two variables: `tenant` (Tenant) and `attributes`, a map of the evaluation's
// other attributes (OpenFeature evaluation context; empty over HTTP). The same environment style
// as internal/policy: native struct types, string and optional helpers, bounded parsing.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Tenant](), ext.ParseStructTags(true)),
		cel.Variable("tenant", cel.ObjectType("flags.Tenant")),
		cel.Variable("attributes", cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(),
		cel.OptionalTypes(),
		cel.ParserRecursionLimit(maxParseDepth),
		cel.ParserExpressionSizeLimit(MaxExpressionLen),
	)
})

// compile parses and type-checks expr, refusing anything but a bool. The error's text is for the
// client (it names line and column) and carries no internal detail.
func compile(expr string) (cel.Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("required: a CEL expression")
	}
	if len(expr) > MaxExpressionLen {
		return nil, fmt.Errorf("must be at most %d bytes", MaxExpressionLen)
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("flag cel environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		msg := strings.ReplaceAll(iss.Err().Error(), "\n", " ")
		if len(msg) > 512 {
			msg = msg[:512] + "…"
		}
		return nil, fmt.Errorf("invalid CEL: %s", msg)
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must be a bool CEL expression, not %s", t)
	}
	prg, err := env.Program(ast, cel.CostLimit(costLimit))
	if err != nil {
		return nil, fmt.Errorf("invalid CEL: %s", err)
	}
	return prg, nil
}
