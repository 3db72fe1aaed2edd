package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// `nops identity revoke` and `nops identity revocations`: SVID revocations on a running kernel
// (/v1/identity/revocations; see docs/mtls.md).

// revocationDoc is an SVIDRevocation of api/kernel.yaml.
type revocationDoc struct {
	ID        string     `json:"id"`
	Serial    string     `json:"serial"`
	SPIFFEID  string     `json:"spiffe_id"`
	TenantID  string     `json:"tenant_id"`
	Reason    string     `json:"reason"`
	RevokedAt *time.Time `json:"revoked_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Actor     string     `json:"actor"`
}

// identityRevocationCmds returns `identity revoke` and `identity revocations`, which use the
// connection flags of `identity` (f).
func (c *cli) identityRevocationCmds(f *clientFlags) []*cobra.Command {
	var serial, spiffeID, reason string
	revoke := &cobra.Command{
		Use:   "revoke (--serial SERIAL | --spiffe-id SPIFFE_ID) [--reason TEXT]",
		Short: "Revoke X.509-SVIDs by certificate serial or by SPIFFE ID, on every replica's mTLS listener",
		Long: "Records a revocation: the mTLS listeners refuse the revoked certificates at the next handshake\n" +
			"and close their open connections, this replica at once and the others within seconds.\n" +
			"--spiffe-id revokes every SVID of that ID issued until now (a later one is accepted: re-enrolling\n" +
			"needs no un-revoke). A tenant's ADMIN revokes SPIFFE IDs of its tenant; --serial (any\n" +
			"certificate, leaf or intermediate) and IDs of other tenants or of kernels are for a SUPER_ADMIN.",
		Example: `  nops identity revoke --spiffe-id spiffe://nops.local/tenant/ten_01J…/agent/agt_01J… --reason "key leaked"
  nops identity revoke --serial 9f3c41d2a8e07b15c6f2d0e9a4b3c817`,
		Args: cobra.NoArgs,
		RunE: c.remote(f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			if (serial == "") == (spiffeID == "") {
				return errors.New("give exactly one of --serial and --spiffe-id")
			}
			body := map[string]any{}
			if serial != "" {
				body["serial"] = serial
			} else {
				body["spiffe_id"] = spiffeID
			}
			if reason != "" {
				body["reason"] = reason
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			var doc revocationDoc
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/identity/revocations", q, body, nil, &doc)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			return details(cmd.OutOrStdout(), [][2]string{
				{"ID", doc.ID}, {"REVOKED", revocationTarget(doc)}, {"TENANT", orDash(doc.TenantID)},
				{"REASON", orDash(doc.Reason)}, {"REVOKED AT", formatTime(doc.RevokedAt)},
				{"EXPIRES", formatTime(doc.ExpiresAt)}, {"ACTOR", doc.Actor},
			})
		}),
	}
	fl := revoke.Flags()
	fl.StringVar(&serial, "serial", "", "a certificate serial number in hexadecimal (SUPER_ADMIN)")
	fl.StringVar(&spiffeID, "spiffe-id", "", "a SPIFFE ID of the kernel's trust domain")
	fl.StringVar(&reason, "reason", "", "why, for the list and the audit trail")
	revoke.MarkFlagsMutuallyExclusive("serial", "spiffe-id")

	var pageSize int
	list := &cobra.Command{
		Use:   "revocations",
		Short: "List the SVID revocations in force (a tenant's own; a SUPER_ADMIN's every one, or --tenant's)",
		Args:  cobra.NoArgs,
		RunE: c.remote(f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			items, err := api.listAll(ctx, "/v1/identity/revocations", q, pageSize, progressWriter(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			docs, err := decodeItems[revocationDoc](items)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(docs))
			for _, d := range docs {
				rows = append(rows, []string{d.ID, revocationTarget(d), orDash(d.TenantID), formatTime(d.RevokedAt), formatTime(d.ExpiresAt), d.Actor, orDash(d.Reason)})
			}
			return table(cmd.OutOrStdout(), []string{"ID", "REVOKED", "TENANT", "REVOKED AT", "EXPIRES", "ACTOR", "REASON"}, rows)
		}),
	}
	bindPageSize(list, &pageSize)
	return []*cobra.Command{revoke, list}
}

// revocationTarget renders what a revocation names: "serial …" or the SPIFFE ID.
func revocationTarget(d revocationDoc) string {
	if d.Serial != "" {
		return "serial " + d.Serial
	}
	return d.SPIFFEID
}
