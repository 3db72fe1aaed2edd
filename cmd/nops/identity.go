package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nops-kernel/nops/internal/keyfile"
)

// Workload identity on a running kernel (/v1/identity/*; see docs/identity.md): X.509-SVIDs of
// the built-in CA and its trust bundle.

// svidDoc is the answer of POST /v1/identity/svid (api/kernel.yaml, SVID).
type svidDoc struct {
	SPIFFEID  string    `json:"spiffe_id"`
	SVIDChain string    `json:"svid_chain"`
	ExpiresAt time.Time `json:"expires_at"`
	Serial    string    `json:"serial"`
	Bundle    string    `json:"bundle"`
}

// identityFileMode is the mode of every file `identity issue` writes: the key is secret, and the
// certificate and bundle are kept with it.
const identityFileMode = 0o600

func (c *cli) identityCmd() *cobra.Command {
	var f clientFlags
	id := &cobra.Command{
		Use:   "identity",
		Short: "Workload identity: issue X.509-SVIDs of the kernel's CA, fetch its trust bundle, revoke SVIDs",
	}
	f.bind(id.PersistentFlags(), true, true)

	var (
		agent, keyOut, certOut, bundleOut, keyType string
		ttl                                        time.Duration
	)
	issue := &cobra.Command{
		Use:   "issue --key-out FILE --cert-out FILE [--agent AGENT_ID]",
		Short: "Generate a key here and have the kernel sign an X.509-SVID for an agent",
		Long: "Generates a private key locally (it never leaves this machine), sends a certificate signing\n" +
			"request, and writes the key (PKCS #8 PEM) and the SVID chain (leaf, then intermediate) to files\n" +
			"of mode 0600. With an agent's API key the SVID is that agent's; an ADMIN (or SUPER_ADMIN with\n" +
			"--tenant) names the agent with --agent. The SPIFFE ID is decided by the kernel, never by the request.",
		Example: `  nops identity issue --agent agt_01J… --key-out agent.key --cert-out agent.crt --bundle-out bundle.pem
  NOPS_API_KEY=nops_… nops identity issue --key-out svid.key --cert-out svid.crt --ttl 30m`,
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			if keyOut == "" || certOut == "" {
				return errors.New("--key-out and --cert-out are required")
			}
			key, err := generateKey(keyType)
			if err != nil {
				return err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return fmt.Errorf("create the certificate signing request: %w", err)
			}
			body := map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}
			if agent != "" {
				body["agent_id"] = agent
			}
			if cmd.Flags().Changed("ttl") {
				if ttl < time.Second {
					return errors.New("--ttl: must be at least 1s")
				}
				body["ttl_seconds"] = int(ttl.Round(time.Second) / time.Second)
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			var doc svidDoc
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/identity/svid", q, body, nil, &doc)
			if err != nil {
				return err
			}
			pk, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return fmt.Errorf("encode the private key: %w", err)
			}
			// The key first: a certificate on disk without its key would be of no use.
			files := []struct {
				path string
				data []byte
			}{
				{keyOut, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})},
				{certOut, []byte(doc.SVIDChain)},
			}
			if bundleOut != "" {
				files = append(files, struct {
					path string
					data []byte
				}{bundleOut, []byte(doc.Bundle)})
			}
			for _, fl := range files {
				if err := keyfile.Write(fl.path, fl.data, identityFileMode, true); err != nil {
					return err
				}
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "SPIFFE ID\t%s\n", clean(doc.SPIFFEID))
			fmt.Fprintf(tw, "SERIAL\t%s\n", clean(doc.Serial))
			fmt.Fprintf(tw, "EXPIRES\t%s\n", doc.ExpiresAt.UTC().Format(time.RFC3339))
			fmt.Fprintf(tw, "KEY\t%s\n", keyOut)
			fmt.Fprintf(tw, "CERTIFICATES\t%s\n", certOut)
			if bundleOut != "" {
				fmt.Fprintf(tw, "BUNDLE\t%s\n", bundleOut)
			}
			return tw.Flush()
		}),
	}
	fl := issue.Flags()
	fl.StringVar(&agent, "agent", "", "the agent to issue for (ADMIN or SUPER_ADMIN; an agent's own key needs none)")
	fl.StringVar(&keyOut, "key-out", "", "file to write the new private key to (PEM, mode 0600)")
	fl.StringVar(&certOut, "cert-out", "", "file to write the SVID chain to (PEM: leaf, then intermediate; mode 0600)")
	fl.StringVar(&bundleOut, "bundle-out", "", "file to write the trust bundle's roots to (PEM)")
	fl.StringVar(&keyType, "key-type", "ecdsa-p256", "key to generate: ecdsa-p256, ecdsa-p384 or ed25519")
	fl.DurationVar(&ttl, "ttl", 0, "lifetime shorter than the kernel's identity.svid_ttl (default: that)")

	var format string
	bundle := &cobra.Command{
		Use:   "bundle",
		Short: "Print the trust bundle: the SPIFFE bundle (JSON) or its roots as PEM",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			raw, err := api.getJSON(ctx, "/v1/identity/bundle", nil, nil)
			if err != nil {
				return err
			}
			switch format {
			case "spiffe":
				return printJSON(cmd.OutOrStdout(), raw)
			case "pem":
				var doc struct {
					Keys []struct {
						X5C [][]byte `json:"x5c"` // standard base64 in JSON
					} `json:"keys"`
				}
				if err := decodeJSON(raw, &doc); err != nil {
					return err
				}
				for _, k := range doc.Keys {
					for _, der := range k.X5C {
						if err := pem.Encode(cmd.OutOrStdout(), &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
							return err
						}
					}
				}
				return nil
			}
			return fmt.Errorf("--format: must be spiffe or pem, got %q", format)
		}),
	}
	bundle.Flags().StringVar(&format, "format", "spiffe", "spiffe (the SPIFFE bundle, JSON) or pem (the roots)")
	id.AddCommand(issue, bundle)
	id.AddCommand(c.identityRotateCACmd(&f))       // identity_rotate.go
	id.AddCommand(c.identityRevocationCmds(&f)...) // identity_revoke.go
	return id
}

// generateKey makes the private key of an SVID.
func generateKey(kind string) (crypto.Signer, error) {
	switch kind {
	case "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("--key-type: must be ecdsa-p256, ecdsa-p384 or ed25519, got %q", kind)
}
