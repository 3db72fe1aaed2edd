package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nops-kernel/nops/internal/audit"
)

// auditRecordDoc is what the table shows of an AuditRecord (api/kernel.yaml).
type auditRecordDoc struct {
	Tree  string    `json:"tree"`
	Seq   int64     `json:"seq"`
	Time  time.Time `json:"time"`
	Actor struct {
		Principal string `json:"principal"`
		IP        string `json:"ip"`
		RequestID string `json:"request_id"`
	} `json:"actor"`
	Action   string `json:"action"`
	Resource string `json:"resource"`
	Decision struct {
		Allowed bool   `json:"allowed"`
		Reason  string `json:"reason"`
	} `json:"decision"`
}

// withRemoteAudit adds to the offline `nops audit` command (verify, check-proof) the commands
// that read the audit log of a running kernel: list, checkpoint, proof, remote-verify.
func (c *cli) withRemoteAudit(a *cobra.Command) *cobra.Command {
	a.Short = "Read and verify the audit log: offline (verify, check-proof) or from a running kernel"
	// One set of connection flags serves every remote subcommand: only one of them runs.
	var f clientFlags
	const tenantNote = "\n\nA tenant's credential reads its tenant's log; SUPER_ADMIN reads the global log, or a\n" +
		"tenant's with --tenant."

	var (
		action, decision string
		pageSize         int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit records of a running kernel, oldest first, following every page",
		Long:  "Lists the records of the log, oldest first." + tenantNote,
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			if action != "" {
				q.Set("action", action)
			}
			if decision != "" {
				q.Set("decision", decision)
			}
			items, err := api.listAll(ctx, "/v1/audit", q, pageSize, progressWriter(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			recs, err := decodeItems[auditRecordDoc](items)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(recs))
			for _, r := range recs {
				d := "allow"
				if !r.Decision.Allowed {
					d = "deny"
				}
				rows = append(rows, []string{strconv.FormatInt(r.Seq, 10), r.Time.UTC().Format(time.RFC3339), orDash(r.Actor.Principal),
					r.Action, orDash(r.Resource), d, orDash(r.Decision.Reason)})
			}
			return table(cmd.OutOrStdout(), []string{"SEQ", "TIME", "PRINCIPAL", "ACTION", "RESOURCE", "DECISION", "REASON"}, rows)
		}),
	}
	f.bind(list.Flags(), true, true)
	list.Flags().StringVar(&action, "action", "", "only records of this action, e.g. agent.register")
	list.Flags().StringVar(&decision, "decision", "", "only allowed or denied requests: allow or deny")
	bindPageSize(list, &pageSize)

	checkpoint := &cobra.Command{
		Use:   "checkpoint",
		Short: "Show the latest signed checkpoint of the log and the key that verifies it",
		Long: "Shows the latest checkpoint (tree size and root hash, as a signed note) and the note verifier\n" +
			"key; pass that key to `nops audit check-proof --verifier-key`." + tenantNote,
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			var cp struct {
				Tree        string `json:"tree"`
				Size        int64  `json:"size"`
				RootHash    string `json:"root_hash"`
				Note        string `json:"note"`
				VerifierKey string `json:"verifier_key"`
			}
			raw, err := api.getJSON(ctx, "/v1/audit/checkpoint", q, &cp)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			w := cmd.OutOrStdout()
			if err := details(w, [][2]string{
				{"TREE", cp.Tree},
				{"SIZE", strconv.FormatInt(cp.Size, 10)},
				{"ROOT HASH", cp.RootHash},
				{"VERIFIER KEY", cp.VerifierKey},
			}); err != nil {
				return err
			}
			fmt.Fprintln(w)
			for _, line := range strings.Split(strings.TrimRight(cp.Note, "\n"), "\n") {
				fmt.Fprintln(w, clean(line))
			}
			return nil
		}),
	}
	f.bind(checkpoint.Flags(), true, true)

	var (
		outFile string
		size    int64
	)
	proof := &cobra.Command{
		Use:   "proof SEQ -o BUNDLE.json",
		Short: "Save the inclusion proof bundle of one record, for `nops audit check-proof`",
		Long: "Fetches the proof that record SEQ is in the latest signed checkpoint (or the one of --size)\n" +
			"and writes the bundle (record, Merkle proof, signed checkpoint) to a file, or to stdout\n" +
			"without -o. An auditor checks it offline, with no access to the kernel:\n\n" +
			"  nops audit check-proof BUNDLE.json --verifier-key \"$(nops audit checkpoint -o json | jq -r .verifier_key)\"" +
			tenantNote,
		Args: cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			seq, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || seq < 0 {
				return fmt.Errorf("SEQ: want a record sequence number (0, 1, …), got %q", args[0])
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			q.Set("seq", strconv.FormatInt(seq, 10))
			if cmd.Flags().Changed("size") {
				q.Set("size", strconv.FormatInt(size, 10))
			}
			raw, err := api.getJSON(ctx, "/v1/audit/proof/inclusion", q, nil)
			if err != nil {
				return err
			}
			b, err := audit.ParseBundle(raw)
			if err != nil {
				return fmt.Errorf("the kernel's proof bundle does not parse: %w", err)
			}
			var buf bytes.Buffer
			if err := json.Indent(&buf, raw, "", "  "); err != nil {
				return fmt.Errorf("indent proof bundle: %w", err)
			}
			buf.WriteByte('\n')
			if outFile == "" || outFile == "-" {
				_, err := cmd.OutOrStdout().Write(buf.Bytes())
				return err
			}
			// The record names principals and client addresses: readable by its owner only.
			if err := os.WriteFile(outFile, buf.Bytes(), 0o600); err != nil {
				return fmt.Errorf("write proof bundle: %w", err)
			}
			tree := "?"
			if rec, err := audit.ParseCanonical(b.Record); err == nil {
				tree = rec.Tree
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote the inclusion proof of record %d of tree %s to %s\n"+
				"check it offline: nops audit check-proof %s --verifier-key <verifier key of `nops audit checkpoint`>\n",
				b.Seq, clean(tree), outFile, outFile)
			return nil
		}),
	}
	f.bind(proof.Flags(), true, false)
	proof.Flags().StringVarP(&outFile, "output", "o", "", "file to write the bundle to (default: stdout)")
	proof.Flags().Int64Var(&size, "size", 0, "tree size of the signed checkpoint to prove against (default: the latest)")

	verify := &cobra.Command{
		Use:   "remote-verify",
		Short: "Ask a running kernel to recompute its audit log and check it against the signed checkpoints",
		Long: "The kernel recomputes the tree from its records (GET /v1/audit/verify). Exits 1 when the\n" +
			"log does not verify, naming the first bad record. For a check that trusts no running kernel,\n" +
			"use `nops audit verify` against the database, or `nops audit check-proof` on a bundle." + tenantNote,
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			rep := audit.Report{FirstBadSeq: -1}
			raw, err := api.getJSON(ctx, "/v1/audit/verify", q, &rep)
			if err != nil {
				return err
			}
			if api.json() {
				if err := printJSON(cmd.OutOrStdout(), raw); err != nil {
					return err
				}
				if !rep.OK {
					return errAuditFailed
				}
				return nil
			}
			rep.Tree = clean(rep.Tree)
			for i := range rep.Problems {
				rep.Problems[i].Detail = clean(rep.Problems[i].Detail)
				rep.Problems[i].Kind = audit.Kind(clean(string(rep.Problems[i].Kind)))
			}
			return printReports(cmd, []audit.Report{rep}, false)
		}),
	}
	f.bind(verify.Flags(), true, true)

	a.AddCommand(list, checkpoint, proof, verify)
	return a
}
