package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// The stored ABAC policies of a running kernel (/v1/policies). `nops policy test` (policy.go)
// checks policy files offline; these commands manage what the kernel stores.

// policyDoc is what the tables show of a Policy (api/kernel.yaml).
type policyDoc struct {
	ID          string    `json:"id"`
	Tenant      string    `json:"tenant"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Effect      string    `json:"effect"`
	Expression  string    `json:"expression"`
	Enabled     bool      `json:"enabled"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Version     int64     `json:"version"`
}

func (c *cli) policiesCmd() *cobra.Command {
	var f clientFlags
	p := &cobra.Command{
		Use:   "policies",
		Short: "Manage the ABAC policies stored in a running kernel",
		Long: "Policies are CEL expressions the kernel evaluates on every request RBAC allowed (see\n" +
			"docs/policies.md). A tenant's credential manages its tenant's policies; SUPER_ADMIN names a\n" +
			"tenant with --tenant, or without it manages the global policies, which apply to every tenant.",
	}
	f.bind(p.PersistentFlags(), true, true)
	policyPath := func(id string) string { return "/v1/policies/" + url.PathEscape(id) }

	var pageSize int
	list := &cobra.Command{
		Use:   "list",
		Short: "List the policies, following every page",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			items, err := api.listAll(ctx, "/v1/policies", q, pageSize, progressWriter(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			ps, err := decodeItems[policyDoc](items)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(ps))
			for _, p := range ps {
				rows = append(rows, []string{p.ID, p.Name, p.Effect, strconv.FormatBool(p.Enabled), orDash(p.Tenant), strconv.FormatInt(p.Version, 10)})
			}
			return table(cmd.OutOrStdout(), []string{"ID", "NAME", "EFFECT", "ENABLED", "TENANT", "VERSION"}, rows)
		}),
	}
	bindPageSize(list, &pageSize)

	get := &cobra.Command{
		Use:   "get POLICY_ID",
		Short: "Show a policy, with its expression and current ETag",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			resp, err := api.do(ctx, http.MethodGet, policyPath(args[0]), q, nil, nil)
			if err != nil {
				return err
			}
			return showPolicy(cmd.OutOrStdout(), api, resp)
		}),
	}

	var (
		file, name, effect, expression, description string
		disabled                                    bool
	)
	create := &cobra.Command{
		Use:   "create (-f POLICY.json | --name NAME --effect allow|deny --expression EXPR)",
		Short: "Create a policy; the kernel refuses one that does not compile, with the compiler's message",
		Example: `  nops policies create --name no-critical-deletes --effect deny \
    --expression 'action == "agents.delete" && resource.criticality == "critical"'
  nops policies create -f policy.json --tenant acme`,
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			var body any
			if file != "" {
				for _, fl := range []string{"name", "effect", "expression", "description", "disabled"} {
					if cmd.Flags().Changed(fl) {
						return fmt.Errorf("--%s: give either -f or the policy's flags, not both", fl)
					}
				}
				spec, err := readInput(cmd, file)
				if err != nil {
					return err
				}
				body = spec
			} else {
				if name == "" || effect == "" || expression == "" {
					return errors.New("give -f POLICY.json, or --name, --effect and --expression")
				}
				spec := map[string]any{"name": name, "effect": effect, "expression": expression, "enabled": !disabled}
				if description != "" {
					spec["description"] = description
				}
				body = spec
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/policies", q, body, nil, nil)
			if err != nil {
				return err
			}
			return showPolicy(cmd.OutOrStdout(), api, resp)
		}),
	}
	cf := create.Flags()
	cf.StringVarP(&file, "file", "f", "", "policy (JSON, shaped as PolicySpec in api/kernel.yaml); - for standard input")
	cf.StringVar(&name, "name", "", "name, unique in the tenant")
	cf.StringVar(&effect, "effect", "", "allow or deny")
	cf.StringVar(&expression, "expression", "", "CEL expression that evaluates to a bool")
	cf.StringVar(&description, "description", "", "what the policy is for")
	cf.BoolVar(&disabled, "disabled", false, "store the policy disabled")

	var ifMatch string
	del := &cobra.Command{
		Use:   "delete POLICY_ID",
		Short: "Delete a policy",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			var h http.Header
			if ifMatch != "" {
				h = http.Header{"If-Match": {ifMatch}}
			}
			if _, err := api.do(ctx, http.MethodDelete, policyPath(args[0]), q, nil, h); err != nil {
				return err
			}
			if !api.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "policy %s deleted\n", args[0])
			}
			return nil
		}),
	}
	del.Flags().StringVar(&ifMatch, "if-match", "", "delete only if the policy still has this ETag (shown by get)")

	p.AddCommand(list, get, create, del)
	return p
}

// showPolicy prints one policy; in a table, with the ETag the response carried.
func showPolicy(w io.Writer, api *apiClient, resp *apiResponse) error {
	if api.json() {
		return printJSON(w, resp.body)
	}
	var p policyDoc
	if err := decodeJSON(resp.body, &p); err != nil {
		return err
	}
	tenant := p.Tenant
	if tenant == "" {
		tenant = "(global)"
	}
	return details(w, [][2]string{
		{"ID", p.ID},
		{"TENANT", tenant},
		{"NAME", p.Name},
		{"DESCRIPTION", orDash(p.Description)},
		{"EFFECT", p.Effect},
		{"ENABLED", strconv.FormatBool(p.Enabled)},
		{"EXPRESSION", p.Expression},
		{"VERSION", strconv.FormatInt(p.Version, 10)},
		{"CREATED", p.CreatedAt.UTC().Format(time.RFC3339)},
		{"UPDATED", p.UpdatedAt.UTC().Format(time.RFC3339)},
		{"ETAG", orDash(resp.header.Get("ETag"))},
	})
}
