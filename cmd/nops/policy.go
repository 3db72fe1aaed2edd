package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nops-kernel/nops/internal/policy"
)

// The ABAC policy commands: `nops policy test <dir>` runs the test cases of a directory of policy
// files with the kernel's own policy engine, offline (no kernel, no database), for tenants' CI.
// The file format is internal/policy's (docs/policies.md).

func (c *cli) policyCmd() *cobra.Command {
	p := &cobra.Command{Use: "policy", Short: "Check ABAC policies offline"}
	var costLimit uint64
	test := &cobra.Command{
		Use:   "test DIR",
		Short: "Compile the policies of DIR and run its test cases; exit 1 on a failure",
		Long: "Reads every *.yaml / *.yml file directly in DIR: their policies are compiled exactly as the\n" +
			"kernel compiles them, then each test case (input -> expected allow or deny, optionally the deciding\n" +
			"policy) is evaluated with the same engine. Prints one line per case and exits 1 when a policy does\n" +
			"not compile or a case fails. See docs/policies.md for the format.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := policy.ReadDir(args[0])
			if err != nil {
				return err
			}
			e, err := policy.NewEngine(nil, policy.Options{CostLimit: costLimit})
			if err != nil {
				return err
			}
			if err := e.SetFilePolicies(d.Policies); err != nil {
				return fmt.Errorf("policies do not compile:\n%w", err)
			}
			out := cmd.OutOrStdout()
			if len(d.Tests) == 0 {
				fmt.Fprintf(out, "%d policies compiled; no test cases in %s\n", len(d.Policies), args[0])
				return nil
			}
			results := policy.RunTests(cmd.Context(), e, d.Tests)
			rows := make([][]string, 0, len(results))
			failed := 0
			for _, r := range results {
				status, got := "PASS", "deny"
				if r.Decision.Allowed {
					got = "allow"
				}
				if !r.Pass {
					status = "FAIL"
					failed++
				}
				rows = append(rows, []string{status, r.Case.File, r.Case.Name, got, r.Decision.PolicyID})
			}
			if err := table(out, []string{"RESULT", "FILE", "CASE", "DECISION", "POLICY"}, rows); err != nil {
				return err
			}
			for _, r := range results {
				if !r.Pass {
					fmt.Fprintf(out, "FAIL %s: %s: %s\n", r.Case.File, r.Case.Name, r.Problem)
				}
			}
			fmt.Fprintf(out, "%d policies, %d cases: %d passed, %d failed\n", len(d.Policies), len(results), len(results)-failed, failed)
			if failed > 0 {
				return fmt.Errorf("%d of %d policy test cases failed", failed, len(results))
			}
			return nil
		},
	}
	test.Flags().Uint64Var(&costLimit, "cost-limit", policy.DefaultCostLimit, "cost limit of one policy evaluation (the kernel's policy cost limit)")
	p.AddCommand(test)
	return p
}
