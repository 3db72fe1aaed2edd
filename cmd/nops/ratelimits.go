package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// The rate-limit overrides of a running kernel (/v1/rate-limits, SUPER_ADMIN only).

// overrideDoc is what the tables show of a RateLimitOverride (api/kernel.yaml).
type overrideDoc struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Target    string    `json:"target"`
	Limit     int       `json:"limit"`
	Period    string    `json:"period"`
	Burst     int       `json:"burst"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (o overrideDoc) limit() string {
	if o.Limit == 0 {
		return "unlimited"
	}
	return strconv.Itoa(o.Limit) + "/" + o.Period
}

func (c *cli) rateLimitsCmd() *cobra.Command {
	var f clientFlags
	rl := &cobra.Command{
		Use:   "rate-limits",
		Short: "Manage the rate-limit overrides of a running kernel (SUPER_ADMIN)",
		Long: "An override replaces one rule of the rate limiter for one target: the per-IP rule for a CIDR\n" +
			"prefix, the per-tenant rule for a tenant, the route-class rule for a route (\"GET /v1/agents\").\n" +
			"A limit of 0 exempts the target. Every replica applies a change within 2 s.",
	}
	f.bind(rl.PersistentFlags(), false, true)

	list := &cobra.Command{
		Use:   "list",
		Short: "List the overrides",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			var l struct {
				Items []overrideDoc `json:"items"`
			}
			raw, err := api.getJSON(ctx, "/v1/rate-limits", nil, &l)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(l.Items))
			for _, o := range l.Items {
				rows = append(rows, []string{o.ID, o.Kind, o.Target, o.limit(), strconv.Itoa(o.Burst), o.UpdatedAt.UTC().Format(time.RFC3339)})
			}
			return table(cmd.OutOrStdout(), []string{"ID", "KIND", "TARGET", "LIMIT", "BURST", "UPDATED"}, rows)
		}),
	}

	var (
		kind, target string
		limit, burst int
		period       time.Duration
	)
	set := &cobra.Command{
		Use:   "set --kind cidr|tenant|route --target TARGET --limit N --period D",
		Short: "Create the override of a kind and target, or replace its limit, period and burst",
		Example: `  nops rate-limits set --kind cidr --target 10.20.0.0/16 --limit 1000 --period 1m --burst 100
  nops rate-limits set --kind route --target 'POST /v1/auth/token' --limit 10 --period 1m
  nops rate-limits set --kind cidr --target 192.0.2.10 --limit 0 --period 1m   # exempt a monitoring host`,
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			body := map[string]any{"kind": kind, "target": target, "limit": limit, "period": period.String(), "burst": burst}
			var o overrideDoc
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/rate-limits", nil, body, nil, &o)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			what := "replaced"
			if resp.status == http.StatusCreated {
				what = "created"
			}
			if err := details(cmd.OutOrStdout(), [][2]string{
				{"ID", o.ID}, {"KIND", o.Kind}, {"TARGET", o.Target}, {"LIMIT", o.limit()}, {"BURST", strconv.Itoa(o.Burst)},
				{"CREATED", o.CreatedAt.UTC().Format(time.RFC3339)}, {"UPDATED", o.UpdatedAt.UTC().Format(time.RFC3339)},
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "override %s %s\n", o.ID, what)
			return nil
		}),
	}
	sf := set.Flags()
	sf.StringVar(&kind, "kind", "", "cidr, tenant or route")
	sf.StringVar(&target, "target", "", `CIDR prefix or address, tenant ID, or route pattern ("GET /v1/agents")`)
	sf.IntVar(&limit, "limit", 0, "requests per period; 0 exempts the target")
	sf.DurationVar(&period, "period", time.Minute, "period, 1s to 24h")
	sf.IntVar(&burst, "burst", 0, "requests allowed at once on top of the limit")
	for _, fl := range []string{"kind", "target", "limit"} {
		_ = set.MarkFlagRequired(fl)
	}

	del := &cobra.Command{
		Use:   "delete OVERRIDE_ID",
		Short: "Delete an override; the rule it replaced applies again",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			if _, err := api.do(ctx, http.MethodDelete, "/v1/rate-limits/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			if !api.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "override %s deleted\n", args[0])
			}
			return nil
		}),
	}

	rl.AddCommand(list, set, del)
	return rl
}
