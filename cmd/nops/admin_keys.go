package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// keyDoc is what the tables show of an ApiKey (api/kernel.yaml); Secret is set only in the
// answers of create and rotate.
type keyDoc struct {
	ID                       string     `json:"id"`
	Tenant                   string     `json:"tenant"`
	AgentID                  string     `json:"agent_id"`
	Name                     string     `json:"name"`
	Role                     string     `json:"role"`
	Scopes                   []string   `json:"scopes"`
	CreatedBy                string     `json:"created_by"`
	CreatedAt                time.Time  `json:"created_at"`
	ExpiresAt                *time.Time `json:"expires_at"`
	RevokedAt                *time.Time `json:"revoked_at"`
	LastUsedAt               *time.Time `json:"last_used_at"`
	PreviousSecretValidUntil *time.Time `json:"previous_secret_valid_until"`
	RotateBy                 *time.Time `json:"rotate_by"`
	Secret                   string     `json:"secret"`
}

func (k keyDoc) status(now time.Time) string {
	switch {
	case k.RevokedAt != nil:
		return "revoked"
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return "expired"
	case k.RotateBy != nil && !now.Before(*k.RotateBy):
		return "rotation-overdue"
	case k.PreviousSecretValidUntil != nil && now.Before(*k.PreviousSecretValidUntil):
		return "rotating"
	case k.RotateBy != nil:
		return "rotation-required"
	}
	return "active"
}

// secretWarning goes to stderr with every new secret.
const secretWarning = "warning: the secret above is shown this once and cannot be read back: store it now (e.g. in a secret manager)"

func (c *cli) keysCmd() *cobra.Command {
	var f clientFlags
	k := &cobra.Command{
		Use:   "keys",
		Short: "Manage the API keys of a tenant on a running kernel",
		Long: "API keys are service principals of a tenant with a role. Their secret is shown once, by\n" +
			"create and rotate; list and get never show it. SUPER_ADMIN names the tenant with --tenant.",
	}
	f.bind(k.PersistentFlags(), true, true)
	keyPath := func(id string, rest ...string) string {
		return "/v1/api-keys/" + url.PathEscape(id) + strings.Join(rest, "")
	}

	var (
		name, role, agent string
		scopes            []string
		expiresIn         time.Duration
	)
	create := &cobra.Command{
		Use:     "create --name NAME --role ROLE",
		Short:   "Create an API key and print its secret (once)",
		Example: `  nops keys create --name ci --role OPERATOR --scope agents:read --scope agents:heartbeat --expires-in 720h`,
		Args:    cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			body := map[string]any{"name": name, "role": strings.ToUpper(role)}
			if len(scopes) > 0 {
				body["scopes"] = scopes
			}
			if agent != "" {
				body["agent_id"] = agent
			}
			if cmd.Flags().Changed("expires-in") {
				if expiresIn <= 0 {
					return errors.New("--expires-in: must be positive")
				}
				body["expires_at"] = time.Now().Add(expiresIn).UTC().Format(time.RFC3339)
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/api-keys", q, body, nil, nil)
			if err != nil {
				return err
			}
			return showKeySecret(cmd, api, resp.body)
		}),
	}
	cf := create.Flags()
	cf.StringVar(&name, "name", "", "name of the key")
	cf.StringVar(&role, "role", "", "role: ADMIN, OPERATOR or VIEWER (at most your own)")
	cf.StringArrayVar(&scopes, "scope", nil, "scope the key carries (repeatable; default: all the role grants)")
	cf.StringVar(&agent, "agent", "", "bind the key to this agent of the tenant")
	cf.DurationVar(&expiresIn, "expires-in", 0, "lifetime, e.g. 720h (default: no expiry)")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")

	var pageSize int
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's API keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			return listKeys(ctx, cmd, api, "/v1/api-keys", q, pageSize,
				[]string{"ID", "NAME", "ROLE", "AGENT", "STATUS", "EXPIRES", "LAST USED"},
				func(k keyDoc, now time.Time) []string {
					last := "never"
					if k.LastUsedAt != nil {
						last = ago(*k.LastUsedAt, now)
					}
					return []string{k.ID, k.Name, k.Role, orDash(k.AgentID), k.status(now), formatTime(k.ExpiresAt), last}
				})
		}),
	}
	bindPageSize(list, &pageSize)

	get := &cobra.Command{
		Use:   "get KEY_ID",
		Short: "Show an API key (never its secret)",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			raw, err := api.getJSON(ctx, keyPath(args[0]), q, nil)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var k keyDoc
			if err := decodeJSON(raw, &k); err != nil {
				return err
			}
			return details(cmd.OutOrStdout(), keyFields(k))
		}),
	}

	var grace string
	rotate := &cobra.Command{
		Use:   "rotate KEY_ID",
		Short: "Issue a new secret; the old one keeps working for a grace period",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			var body any
			if cmd.Flags().Changed("grace") {
				body = map[string]string{"grace_period": grace}
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, keyPath(args[0], "/rotate"), q, body, nil, nil)
			if err != nil {
				return err
			}
			return showKeySecret(cmd, api, resp.body)
		}),
	}
	rotate.Flags().StringVar(&grace, "grace", "24h", "how long the old secret keeps working, a Go duration (0s: not at all)")

	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke an API key at once",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			if _, err := api.do(ctx, http.MethodDelete, keyPath(args[0]), q, nil, nil); err != nil {
				return err
			}
			if !api.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
			}
			return nil
		}),
	}

	var within string
	expiring := &cobra.Command{
		Use:   "expiring",
		Short: "List the keys that expire or must be rotated soon",
		Long: "Keys, not revoked, whose expiry or rotation deadline (set with force-rotate) falls within\n" +
			"--within of now, those already past it included. SUPER_ADMIN without --tenant sees every tenant's.",
		Example: `  nops keys expiring --within 720h`,
		Args:    cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			q.Set("within", within)
			return listKeys(ctx, cmd, api, "/v1/admin/api-keys/expiring", q, pageSize,
				[]string{"ID", "TENANT", "NAME", "STATUS", "EXPIRES", "ROTATE BY"},
				func(k keyDoc, now time.Time) []string {
					return []string{k.ID, k.Tenant, k.Name, k.status(now), formatTime(k.ExpiresAt), formatTime(k.RotateBy)}
				})
		}),
	}
	expiring.Flags().StringVar(&within, "within", "168h", "the window, a Go duration")
	bindPageSize(expiring, &pageSize)

	var deadline string
	forceRotate := &cobra.Command{
		Use:   "force-rotate KEY_ID",
		Short: "Require a key to be rotated by a deadline; refused after it",
		Long: "Until the deadline the key works and every response to it carries Nops-Api-Key-Rotate-By,\n" +
			"so its holder rotates it (the SDKs do it on their own); from the deadline on it is refused\n" +
			"until rotated. --deadline 0s refuses it at once: rotate it yourself then and hand the new secret over.",
		Example: `  nops keys force-rotate ak01j... --deadline 24h`,
		Args:    cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			body := map[string]string{"deadline": deadline}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/admin/api-keys/"+url.PathEscape(args[0])+"/force-rotate", q, body, nil, nil)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			var k keyDoc
			if err := decodeJSON(resp.body, &k); err != nil {
				return err
			}
			return details(cmd.OutOrStdout(), keyFields(k))
		}),
	}
	forceRotate.Flags().StringVar(&deadline, "deadline", "24h", "how long the holder has to rotate, a Go duration (0s: refused at once)")

	k.AddCommand(create, list, get, rotate, revoke, expiring, forceRotate)
	return k
}

// listKeys prints every page of a key listing at path: the items as JSON with -o json, else a
// table of header with one row per key.
func listKeys(ctx context.Context, cmd *cobra.Command, api *apiClient, path string, q url.Values, pageSize int,
	header []string, row func(k keyDoc, now time.Time) []string) error {
	items, err := api.listAll(ctx, path, q, pageSize, progressWriter(cmd.ErrOrStderr()))
	if err != nil {
		return err
	}
	if api.json() {
		return printItems(cmd.OutOrStdout(), items)
	}
	keys, err := decodeItems[keyDoc](items)
	if err != nil {
		return err
	}
	now := time.Now()
	rows := make([][]string, 0, len(keys))
	for _, k := range keys {
		rows = append(rows, row(k, now))
	}
	return table(cmd.OutOrStdout(), header, rows)
}

func keyFields(k keyDoc) [][2]string {
	last := "never"
	if k.LastUsedAt != nil {
		last = formatTime(k.LastUsedAt)
	}
	fields := [][2]string{
		{"ID", k.ID},
		{"TENANT", k.Tenant},
		{"NAME", k.Name},
		{"ROLE", k.Role},
		{"SCOPES", orDash(strings.Join(k.Scopes, " "))},
		{"AGENT", orDash(k.AgentID)},
		{"STATUS", k.status(time.Now())},
		{"CREATED", k.CreatedAt.UTC().Format(time.RFC3339)},
		{"CREATED BY", orDash(k.CreatedBy)},
		{"EXPIRES", formatTime(k.ExpiresAt)},
		{"REVOKED", formatTime(k.RevokedAt)},
		{"LAST USED", last},
	}
	if k.PreviousSecretValidUntil != nil {
		fields = append(fields, [2]string{"OLD SECRET UNTIL", formatTime(k.PreviousSecretValidUntil)})
	}
	if k.RotateBy != nil {
		fields = append(fields, [2]string{"ROTATE BY", formatTime(k.RotateBy)})
	}
	return fields
}

// showKeySecret prints a key with its new secret, and warns on stderr that it is shown once.
func showKeySecret(cmd *cobra.Command, api *apiClient, raw []byte) error {
	w := cmd.OutOrStdout()
	if err := printKeySecret(w, api, raw); err != nil {
		return err
	}
	fmt.Fprintln(cmd.ErrOrStderr(), secretWarning)
	return nil
}

func printKeySecret(w io.Writer, api *apiClient, raw []byte) error {
	if api.json() {
		return printJSON(w, raw)
	}
	var k keyDoc
	if err := decodeJSON(raw, &k); err != nil {
		return err
	}
	if k.Secret == "" {
		return errors.New("the kernel answered without the key's secret")
	}
	return details(w, append(keyFields(k), [2]string{"SECRET", k.Secret}))
}
