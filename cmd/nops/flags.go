package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The feature flags of a running kernel (/v1/flags): global kernel objects a SUPER_ADMIN
// manages, evaluated per tenant (docs/flags.md).

// flagDoc is what the tables show of a Flag (api/kernel.yaml).
type flagDoc struct {
	Key            string     `json:"key"`
	Type           string     `json:"type"`
	Description    string     `json:"description"`
	Variants       []string   `json:"variants"`
	DefaultVariant string     `json:"default_variant"`
	Enabled        bool       `json:"enabled"`
	Rules          []flagRule `json:"rules"`
	Revision       int64      `json:"revision"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

type flagRule struct {
	Expression string `json:"expression"`
	Variant    string `json:"variant"`
}

// flagEvalDoc is a FlagEvaluation.
type flagEvalDoc struct {
	Key      string `json:"key"`
	Tenant   string `json:"tenant"`
	Variant  string `json:"variant"`
	Reason   string `json:"reason"`
	Rule     *int   `json:"rule"`
	Revision int64  `json:"revision"`
}

func (c *cli) flagsCmd() *cobra.Command {
	var f clientFlags
	p := &cobra.Command{
		Use:   "flags",
		Short: "Manage the kernel's feature flags",
		Long: "Feature flags are global kernel objects (SUPER_ADMIN manages them) with ordered, per-tenant\n" +
			"targeting rules in CEL; every replica evaluates a change within about a second (see\n" +
			"docs/flags.md). A tenant's credential may only evaluate them for its own tenant (flags eval).",
	}
	f.bind(p.PersistentFlags(), true, true)
	flagPath := func(key string) string { return "/v1/flags/" + url.PathEscape(key) }

	var pageSize int
	list := &cobra.Command{
		Use:   "list",
		Short: "List the flags, following every page",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			items, err := api.listAll(ctx, "/v1/flags", url.Values{}, pageSize, progressWriter(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			fs, err := decodeItems[flagDoc](items)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(fs))
			for _, fl := range fs {
				rows = append(rows, []string{fl.Key, fl.Type, strconv.FormatBool(fl.Enabled), fl.DefaultVariant, strconv.Itoa(len(fl.Rules)), strconv.FormatInt(fl.Revision, 10)})
			}
			return table(cmd.OutOrStdout(), []string{"KEY", "TYPE", "ENABLED", "DEFAULT", "RULES", "REVISION"}, rows)
		}),
	}
	bindPageSize(list, &pageSize)

	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Show a flag, with its rules and current ETag",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			resp, err := api.do(ctx, http.MethodGet, flagPath(args[0]), url.Values{}, nil, nil)
			if err != nil {
				return err
			}
			return showFlag(cmd.OutOrStdout(), api, resp)
		}),
	}

	var (
		file, typ, def, description, ifMatch string
		variants, rules                      []string
		enabled, create                      bool
	)
	set := &cobra.Command{
		Use:   "set KEY (-f FLAG.json | --type boolean|variant --default VARIANT [--variants a,b] [--rule VARIANT:EXPR]... [--enabled])",
		Short: "Create or replace a flag; the kernel refuses a rule that does not compile, naming it",
		Example: `  nops flags set new-router --type boolean --default false --enabled \
    --rule 'true:tenant.name in ["acme", "globex"]'
  nops flags set checkout --type variant --variants classic,fast --default classic --enabled \
    --rule 'fast:tenant.name.startsWith("beta-")'
  nops flags set checkout -f checkout.json --if-match '"…"'`,
		Args: cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			var body any
			if file != "" {
				for _, fl := range []string{"type", "default", "variants", "rule", "enabled", "description"} {
					if cmd.Flags().Changed(fl) {
						return fmt.Errorf("--%s: give either -f or the flag's options, not both", fl)
					}
				}
				spec, err := readInput(cmd, file)
				if err != nil {
					return err
				}
				body = spec
			} else {
				if typ == "" || def == "" {
					return errors.New("give -f FLAG.json, or --type and --default")
				}
				spec := map[string]any{"type": typ, "default_variant": def, "enabled": enabled}
				if description != "" {
					spec["description"] = description
				}
				if len(variants) > 0 {
					spec["variants"] = variants
				}
				rs := make([]flagRule, 0, len(rules))
				for i, r := range rules {
					variant, expr, ok := strings.Cut(r, ":")
					if !ok || variant == "" || strings.TrimSpace(expr) == "" {
						return fmt.Errorf("--rule %d: want VARIANT:EXPRESSION, got %q", i+1, r)
					}
					rs = append(rs, flagRule{Expression: expr, Variant: variant})
				}
				spec["rules"] = rs
				body = spec
			}
			h := http.Header{}
			if ifMatch != "" {
				h.Set("If-Match", ifMatch)
			}
			if create {
				h.Set("If-None-Match", "*")
			}
			resp, err := api.sendJSON(ctx, http.MethodPut, flagPath(args[0]), url.Values{}, body, h, nil)
			if err != nil {
				return err
			}
			return showFlag(cmd.OutOrStdout(), api, resp)
		}),
	}
	sf := set.Flags()
	sf.StringVarP(&file, "file", "f", "", "flag (JSON, shaped as FlagSpec in api/kernel.yaml); - for standard input")
	sf.StringVar(&typ, "type", "", "boolean or variant")
	sf.StringVar(&def, "default", "", "the default variant (true/false for a boolean flag)")
	sf.StringSliceVar(&variants, "variants", nil, "the variants of a variant flag, comma-separated")
	sf.StringArrayVar(&rules, "rule", nil, "a targeting rule VARIANT:CEL-EXPRESSION; repeat, in matching order")
	sf.BoolVar(&enabled, "enabled", false, "enable the flag (a disabled flag answers its default variant)")
	sf.StringVar(&description, "description", "", "what the flag is for")
	sf.StringVar(&ifMatch, "if-match", "", "replace only if the flag still has this ETag (shown by get)")
	sf.BoolVar(&create, "create", false, "create only: fail if the flag exists")

	var delIfMatch string
	del := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a flag",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			var h http.Header
			if delIfMatch != "" {
				h = http.Header{"If-Match": {delIfMatch}}
			}
			if _, err := api.do(ctx, http.MethodDelete, flagPath(args[0]), url.Values{}, nil, h); err != nil {
				return err
			}
			if !api.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "flag %s deleted\n", args[0])
			}
			return nil
		}),
	}
	del.Flags().StringVar(&delIfMatch, "if-match", "", "delete only if the flag still has this ETag (shown by get)")

	eval := &cobra.Command{
		Use:   "eval KEY",
		Short: "Evaluate a flag for the caller's tenant (SUPER_ADMIN: --tenant) as the kernel answering holds it",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			resp, err := api.do(ctx, http.MethodGet, flagPath(args[0])+"/evaluation", q, nil, nil)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			var e flagEvalDoc
			if err := decodeJSON(resp.body, &e); err != nil {
				return err
			}
			rule := "-"
			if e.Rule != nil {
				rule = strconv.Itoa(*e.Rule)
			}
			return details(cmd.OutOrStdout(), [][2]string{
				{"KEY", e.Key}, {"TENANT", e.Tenant}, {"VARIANT", e.Variant}, {"REASON", e.Reason},
				{"RULE", rule}, {"REVISION", strconv.FormatInt(e.Revision, 10)},
			})
		}),
	}

	p.AddCommand(list, get, set, del, eval)
	return p
}

// showFlag prints one flag; in a table, with the ETag the response carried.
func showFlag(w io.Writer, api *apiClient, resp *apiResponse) error {
	if api.json() {
		return printJSON(w, resp.body)
	}
	var fl flagDoc
	if err := decodeJSON(resp.body, &fl); err != nil {
		return err
	}
	rows := [][2]string{
		{"KEY", fl.Key},
		{"TYPE", fl.Type},
		{"DESCRIPTION", orDash(fl.Description)},
		{"VARIANTS", strings.Join(fl.Variants, ", ")},
		{"DEFAULT", fl.DefaultVariant},
		{"ENABLED", strconv.FormatBool(fl.Enabled)},
	}
	for i, r := range fl.Rules {
		rows = append(rows, [2]string{fmt.Sprintf("RULE %d", i), r.Variant + " ← " + r.Expression})
	}
	rows = append(rows,
		[2]string{"REVISION", strconv.FormatInt(fl.Revision, 10)},
		[2]string{"CREATED", fl.CreatedAt.UTC().Format(time.RFC3339)},
		[2]string{"UPDATED", fl.UpdatedAt.UTC().Format(time.RFC3339)},
		[2]string{"ETAG", orDash(resp.header.Get("ETag"))},
	)
	return details(w, rows)
}
