package policy

import (
	"context"
	"fmt"
)

// TestResult is the outcome of one TestCase.
type TestResult struct {
	Case     TestCase
	Decision Decision
	Pass     bool
	Problem  string // why it failed; "" when it passed
}

// RunTests evaluates each case with e, exactly as a request would be, and compares the decision
// with the expected one.
func RunTests(ctx context.Context, e *Engine, cases []TestCase) []TestResult {
	out := make([]TestResult, 0, len(cases))
	for _, tc := range cases {
		d := e.Evaluate(ctx, tc.Input)
		r := TestResult{Case: tc, Decision: d, Pass: true}
		got := "deny"
		if d.Allowed {
			got = "allow"
		}
		switch {
		case got != tc.Expect:
			r.Pass, r.Problem = false, fmt.Sprintf("expected %s, got %s: %s", tc.Expect, got, d.Reason)
		case tc.Policy != "" && tc.Policy != d.PolicyID && tc.Policy != d.PolicyName:
			r.Pass, r.Problem = false, fmt.Sprintf("expected policy %q to decide, got %s", tc.Policy, decidedBy(d))
		}
		out = append(out, r)
	}
	return out
}

func decidedBy(d Decision) string {
	if d.PolicyID == "" {
		return "no single policy (" + d.Reason + ")"
	}
	return fmt.Sprintf("%s (%s)", d.PolicyID, d.PolicyName)
}
