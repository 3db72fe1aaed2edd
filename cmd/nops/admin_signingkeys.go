package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// The token signing keys of a running kernel (/v1/admin/signing-keys*; SUPER_ADMIN; see
// docs/operations.md, "Rotating keys"). Key material is never shown: the API has none to give.

// signingKeyDoc is a SigningKey of api/kernel.yaml.
type signingKeyDoc struct {
	KID         string     `json:"kid"`
	Algorithm   string     `json:"algorithm"`
	State       string     `json:"state"`
	Source      string     `json:"source"`
	CreatedAt   *time.Time `json:"created_at"`
	ActivatesAt *time.Time `json:"activates_at"`
	RetiresAt   *time.Time `json:"retires_at"`
}

func (c *cli) signingKeysCmd() *cobra.Command {
	var f clientFlags
	sk := &cobra.Command{
		Use:   "signing-keys",
		Short: "List and rotate the kernel's token signing keys (SUPER_ADMIN)",
		Long: "A rotation publishes a new key (a new kid) in the JWKS at once; every replica signs with it\n" +
			"from its activation (auth.key_publish_delay later). The keys it supersedes keep verifying until\n" +
			"every token they signed has expired (token TTL + leeway after the activation), then retire.",
	}
	f.bind(sk.PersistentFlags(), false, true)

	list := &cobra.Command{
		Use:   "list",
		Short: "List the signing keys with their state: pending, signing, verifying or retired",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			var doc struct {
				Items []signingKeyDoc `json:"items"`
			}
			raw, err := api.getJSON(ctx, "/v1/admin/signing-keys", nil, &doc)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(doc.Items))
			for _, k := range doc.Items {
				rows = append(rows, []string{k.KID, k.Algorithm, k.State, k.Source, formatTime(k.CreatedAt), formatTime(k.ActivatesAt), formatTime(k.RetiresAt)})
			}
			return table(cmd.OutOrStdout(), []string{"KID", "ALG", "STATE", "SOURCE", "CREATED", "ACTIVATES", "RETIRES"}, rows)
		}),
	}

	var alg string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the signing key: a new key signs after the publish delay, the old ones retire after the overlap",
		Example: `  nops signing-keys rotate
  nops signing-keys rotate --algorithm EdDSA   # refused unless the kernel signs with EdDSA`,
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			var body any
			if alg != "" {
				body = map[string]string{"algorithm": alg}
			}
			var doc struct {
				Key        signingKeyDoc `json:"key"`
				Superseded []string      `json:"superseded"`
				RetiresAt  *time.Time    `json:"retires_at"`
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/admin/signing-keys/rotate", nil, body, nil, &doc)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			fields := [][2]string{
				{"KID", doc.Key.KID},
				{"ALGORITHM", doc.Key.Algorithm},
				{"STATE", doc.Key.State},
				{"SIGNS FROM", formatTime(doc.Key.ActivatesAt)},
			}
			for _, kid := range doc.Superseded {
				fields = append(fields, [2]string{"SUPERSEDES", fmt.Sprintf("%s (retires %s)", kid, formatTime(doc.RetiresAt))})
			}
			return details(cmd.OutOrStdout(), fields)
		}),
	}
	rotate.Flags().StringVar(&alg, "algorithm", "", "the algorithm of the new key: must be the kernel's auth.signing_alg (default: that)")

	sk.AddCommand(list, rotate)
	return sk
}
