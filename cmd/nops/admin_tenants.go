package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// tenantDoc is what the tables show of a Tenant (api/kernel.yaml).
type tenantDoc struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	DisplayName string    `json:"display_name"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Version     int64     `json:"version"`
}

func (c *cli) tenantsCmd() *cobra.Command {
	var f clientFlags
	t := &cobra.Command{
		Use:   "tenants",
		Short: "Manage tenants of a running kernel (SUPER_ADMIN)",
		Long: "Tenants are SUPER_ADMIN's: log in as admin (`nops login`) and export NOPS_TOKEN.\n" +
			"A tenant may be named by its id (ten_…) or its name.",
	}
	f.bind(t.PersistentFlags(), false, true)

	var displayName string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant (NAME: a DNS label, unique and immutable)",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			body := map[string]string{"name": args[0]}
			if displayName != "" {
				body["display_name"] = displayName
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/tenants", nil, body, nil, nil)
			if err != nil {
				return err
			}
			return showTenant(cmd.OutOrStdout(), api, resp.body)
		}),
	}
	create.Flags().StringVar(&displayName, "display-name", "", "human-readable name")

	var pageSize int
	list := &cobra.Command{
		Use:   "list",
		Short: "List every tenant",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			items, err := api.listAll(ctx, "/v1/tenants", nil, pageSize, progressWriter(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			tenants, err := decodeItems[tenantDoc](items)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(tenants))
			for _, t := range tenants {
				rows = append(rows, []string{t.ID, t.Name, orDash(t.DisplayName), t.Status, t.CreatedAt.UTC().Format(time.RFC3339)})
			}
			return table(cmd.OutOrStdout(), []string{"ID", "NAME", "DISPLAY NAME", "STATUS", "CREATED"}, rows)
		}),
	}
	bindPageSize(list, &pageSize)

	get := &cobra.Command{
		Use:   "get TENANT",
		Short: "Show a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			id, err := api.resolveTenant(ctx, args[0])
			if err != nil {
				return err
			}
			raw, err := api.getJSON(ctx, "/v1/tenants/"+url.PathEscape(id), nil, nil)
			if err != nil {
				return err
			}
			return showTenant(cmd.OutOrStdout(), api, raw)
		}),
	}

	action := func(verb, short string) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " TENANT",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
				id, err := api.resolveTenant(ctx, args[0])
				if err != nil {
					return err
				}
				resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/"+verb, nil, nil, nil, nil)
				if err != nil {
					return err
				}
				return showTenant(cmd.OutOrStdout(), api, resp.body)
			}),
		}
	}

	var cascade bool
	del := &cobra.Command{
		Use:   "delete TENANT",
		Short: "Delete a tenant (refused while it has agents, unless --cascade)",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			id, err := api.resolveTenant(ctx, args[0])
			if err != nil {
				return err
			}
			q := url.Values{}
			if cascade {
				q.Set("cascade", strconv.FormatBool(true))
			}
			if _, err := api.do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(id), q, nil, nil); err != nil {
				return err
			}
			if !api.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "tenant %s deleted\n", id)
			}
			return nil
		}),
	}
	del.Flags().BoolVar(&cascade, "cascade", false, "also delete the tenant's agents, keys and other resources")

	t.AddCommand(create, list, get,
		action("suspend", "Suspend a tenant: its credentials get 403 and its agents leave routing"),
		action("resume", "Resume a suspended tenant"),
		del)
	return t
}

func showTenant(w io.Writer, api *apiClient, raw []byte) error {
	if api.json() {
		return printJSON(w, raw)
	}
	var t tenantDoc
	if err := decodeJSON(raw, &t); err != nil {
		return err
	}
	return details(w, [][2]string{
		{"ID", t.ID},
		{"NAME", t.Name},
		{"DISPLAY NAME", orDash(t.DisplayName)},
		{"STATUS", t.Status},
		{"CREATED", t.CreatedAt.UTC().Format(time.RFC3339)},
		{"UPDATED", t.UpdatedAt.UTC().Format(time.RFC3339)},
		{"VERSION", strconv.FormatInt(t.Version, 10)},
	})
}

// bindPageSize adds --page-size to a list command. Every page is fetched whatever the size; it
// only sets how many items one request asks for.
func bindPageSize(cmd *cobra.Command, size *int) {
	cmd.Flags().IntVar(size, "page-size", 100, fmt.Sprintf("items asked for per request (1-%d); every page is listed", maxPageSize))
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if *size < 1 || *size > maxPageSize {
			return fmt.Errorf("--page-size: must be between 1 and %d, got %d", maxPageSize, *size)
		}
		return nil
	}
}

// decodeItems decodes the items of a list into typed values.
func decodeItems[T any](items []json.RawMessage) ([]T, error) {
	out := make([]T, 0, len(items))
	for _, raw := range items {
		var v T
		if err := decodeJSON(raw, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
