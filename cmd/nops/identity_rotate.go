package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// `nops identity rotate-ca`: the built-in CA's root rotation (POST /v1/identity/ca/rotate,
// SUPER_ADMIN; see docs/identity.md, "Root rotation"). Attached to `nops identity` (identity.go).

// caAuthorityDoc is a CAAuthority of api/kernel.yaml.
type caAuthorityDoc struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	ParentID    string     `json:"parent_id"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	ActivatesAt *time.Time `json:"activates_at"`
	RetiresAt   *time.Time `json:"retires_at"`
}

// identityRotateCACmd is `identity rotate-ca`, using the connection flags f of `identity`.
func (c *cli) identityRotateCACmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-ca",
		Short: "Rotate the built-in CA's root: the new root is trusted at once, issues after a delay (SUPER_ADMIN)",
		Long: "Adds a new root, in the trust bundle at once, and an intermediate under it that starts issuing\n" +
			"identity.root_rotation_delay later, so replicas and clients hold the new root before any SVID\n" +
			"chains to it. The old roots leave the bundle once every SVID chaining to them has expired.",
		Args: cobra.NoArgs,
		RunE: c.remote(f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			var doc struct {
				TrustDomain  string           `json:"trust_domain"`
				Sequence     int64            `json:"sequence"`
				Root         caAuthorityDoc   `json:"root"`
				Intermediate caAuthorityDoc   `json:"intermediate"`
				Retiring     []caAuthorityDoc `json:"retiring"`
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/identity/ca/rotate", nil, nil, nil, &doc)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			fields := [][2]string{
				{"TRUST DOMAIN", doc.TrustDomain},
				{"SEQUENCE", strconv.FormatInt(doc.Sequence, 10)},
				{"NEW ROOT", fmt.Sprintf("%s (expires %s)", doc.Root.ID, doc.Root.NotAfter.UTC().Format(time.RFC3339))},
				{"NEW INTERMEDIATE", fmt.Sprintf("%s (issues from %s)", doc.Intermediate.ID, formatTime(doc.Intermediate.ActivatesAt))},
			}
			for _, r := range doc.Retiring {
				fields = append(fields, [2]string{"RETIRING ROOT", fmt.Sprintf("%s (leaves the bundle %s)", r.ID, formatTime(r.RetiresAt))})
			}
			return details(cmd.OutOrStdout(), fields)
		}),
	}
}
