package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nops-kernel/nops/internal/egress"
)

// egressCmd manages signed egress allow-lists offline (docs/egress.md): the signer key stays on
// the operator's machine, the kernel only holds verifier keys.
func (c *cli) egressCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "egress",
		Short: "Signed egress allow-lists: make a signing key, sign a list, check a signed list",
	}
	cmd.AddCommand(c.egressKeygenCmd(), c.egressSignCmd(), c.egressVerifyCmd())
	return cmd
}

func (c *cli) egressKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen NAME",
		Short: "Make an Ed25519 key pair for signing allow-lists: the signer key goes to --out (mode 0600), the verifier key (egress.allowlist_keys) to stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out: required: the file the secret signer key is written to")
			}
			skey, vkey, err := egress.GenerateAllowListKey(args[0])
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("--out: %w (an existing key is never overwritten)", err)
			}
			if _, err := io.WriteString(f, skey+"\n"); err != nil {
				_ = f.Close()
				return fmt.Errorf("write %s: %w", out, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), vkey)
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file for the secret signer key (created, mode 0600; keep it off the kernel's machines)")
	return cmd
}

func (c *cli) egressSignCmd() *cobra.Command {
	var keyFile, out string
	cmd := &cobra.Command{
		Use:   "sign FILE",
		Short: "Check an allow-list (YAML) and sign it with the signer key; the signed list goes to --out or stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return errors.New("--key: required: the signer key file from nops egress keygen")
			}
			skey, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			text, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			signed, err := egress.SignAllowList(text, string(skey))
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(signed)
				return err
			}
			// Written aside and renamed: a kernel rereading the file never sees half of it.
			tmp := out + ".tmp"
			if err := os.WriteFile(tmp, signed, 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, out)
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "the signer key file (nops egress keygen --out)")
	cmd.Flags().StringVar(&out, "out", "", "where the signed list is written (atomically); default stdout")
	return cmd
}

func (c *cli) egressVerifyCmd() *cobra.Command {
	var keys string
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify a signed allow-list with the verifier keys, as the kernel does at load, and print its rules",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keys == "" {
				keys, _ = c.env("NOPS_EGRESS_ALLOWLIST_KEYS")
			}
			if keys == "" {
				return errors.New("--keys: required (or NOPS_EGRESS_ALLOWLIST_KEYS): the verifier keys")
			}
			vs, err := egress.ParseVerifierKeys(keys)
			if err != nil {
				return fmt.Errorf("--keys: %w", err)
			}
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			l, err := egress.OpenAllowList(raw, vs)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "serial %d, signed by %s, sha256 %s\n\n", l.Serial, l.Signer, l.SHA256)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tSERVICE\tCLASS\tON VIOLATION\tALLOW")
			for _, s := range egress.Services {
				writeRules(tw, "*", s, l.Rules(s, ""))
			}
			for _, t := range slices.Sorted(maps.Keys(l.Tenants)) {
				for _, s := range egress.Services {
					if r, ok := l.Tenants[t][s]; ok {
						writeRules(tw, t, s, r)
					}
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&keys, "keys", "", "comma-separated verifier keys (default NOPS_EGRESS_ALLOWLIST_KEYS)")
	return cmd
}

func writeRules(w io.Writer, tenant, service string, r *egress.Rules) {
	var allow []string
	for _, d := range r.Allow {
		s := d.Prefix.String()
		if d.Host != "" {
			s = d.Host + " (" + d.Class.String() + ")"
		}
		if len(d.Ports) > 0 {
			var ps []string
			for _, p := range d.Ports {
				if p.From == p.To {
					ps = append(ps, fmt.Sprint(p.From))
				} else {
					ps = append(ps, fmt.Sprintf("%d-%d", p.From, p.To))
				}
			}
			s += ":" + strings.Join(ps, ",")
		}
		allow = append(allow, s)
	}
	if r.Class == egress.D4 {
		allow = append(allow, "any public address")
	}
	if len(allow) == 0 {
		allow = []string{"-"}
	}
	action := string(r.Action)
	if action == "" {
		action = string(egress.ActionNone)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", tenant, service, r.Class, action, strings.Join(allow, " "))
}
