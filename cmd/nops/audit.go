package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/kernel"
)

// errAuditFailed makes `nops audit verify|check-proof` exit non-zero after printing the report.
var errAuditFailed = errors.New("audit verification failed")

func (c *cli) auditCmd() *cobra.Command {
	a := &cobra.Command{Use: "audit", Short: "Verify the audit log offline"}
	var (
		verifierKey string
		tree        string
		asJSON      bool
	)
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute every audit tree from its records in the database and check the signed checkpoints",
		Long: "Reads the database directly (no running kernel needed), recomputes each tree's Merkle hashes from the\n" +
			"records and compares them with the stored hashes and the latest signed checkpoint. Exits 1 when a tree\n" +
			"fails, naming the first bad sequence number. The verifier key defaults to the one derived from the\n" +
			"audit signing key file (audit.key_file); an auditor passes the published key with --verifier-key.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			log, err := logger(cmd, cfg)
			if err != nil {
				return err
			}
			key := verifierKey
			if key == "" {
				if key, err = verifierFromKeyFile(cfg.AuditKeyPath()); err != nil {
					return err
				}
			}
			v, err := note.NewVerifier(key)
			if err != nil {
				return fmt.Errorf("--verifier-key: %w", err)
			}
			st, err := kernel.OpenStore(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer st.Close()
			var reports []audit.Report
			if tree != "" {
				r, err := audit.Verify(cmd.Context(), st, tree, note.VerifierList(v))
				if err != nil {
					return err
				}
				reports = []audit.Report{r}
			} else if reports, err = audit.VerifyAll(cmd.Context(), st, note.VerifierList(v)); err != nil {
				return err
			}
			return printReports(cmd, reports, asJSON)
		},
	}
	verify.Flags().StringVar(&verifierKey, "verifier-key", "", "note verifier key of the checkpoints (default: derived from audit.key_file)")
	verify.Flags().StringVar(&tree, "tree", "", "verify only this tree (a tenant id, or \"global\")")
	verify.Flags().BoolVar(&asJSON, "json", false, "print the reports as JSON")

	var proofKey string
	check := &cobra.Command{
		Use:   "check-proof BUNDLE.json",
		Short: "Check an inclusion proof bundle offline: record, Merkle proof and signed checkpoint",
		Long: "What an outside auditor runs: needs only the bundle (GET /v1/audit/proof/inclusion) and the\n" +
			"published verifier key; no kernel, no database.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if proofKey == "" {
				return errors.New("--verifier-key is required")
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read bundle: %w", err)
			}
			b, err := audit.ParseBundle(data)
			if err != nil {
				return fmt.Errorf("parse bundle: %w", err)
			}
			if err := audit.CheckBundle(b, proofKey); err != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "FAILED: record %d: %v\n", b.Seq, err)
				return errAuditFailed
			}
			rec, err := audit.ParseCanonical(b.Record)
			if err != nil {
				return fmt.Errorf("bundle record: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: record %d of tree %s (%s %s, %s) is in the signed checkpoint\n",
				b.Seq, rec.Tree, rec.Action, rec.Resource, rec.Time.Format("2006-01-02T15:04:05Z07:00"))
			return nil
		},
	}
	check.Flags().StringVar(&proofKey, "verifier-key", "", "the published note verifier key of the checkpoints")
	a.AddCommand(verify, check)
	return a
}

func printReports(cmd *cobra.Command, reports []audit.Report, asJSON bool) error {
	failed := false
	for _, r := range reports {
		failed = failed || !r.OK
	}
	if asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else {
		if len(reports) == 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "no audit records")
		}
		for _, r := range reports {
			fmt.Fprintln(cmd.OutOrStdout(), r.Summary())
			for _, p := range r.Problems {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s at seq %d: %s\n", p.Kind, p.Seq, p.Detail)
			}
		}
	}
	if failed {
		return errAuditFailed
	}
	return nil
}

// verifierFromKeyFile derives the verifier key from the signing key file without creating one.
func verifierFromKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("no --verifier-key and the audit key file cannot be read: %w", err)
	}
	s, err := audit.NewSigner(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("audit key file %s: %w", path, err)
	}
	return s.VerifierKey(), nil
}
