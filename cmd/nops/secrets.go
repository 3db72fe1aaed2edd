package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/sealbox"
)

// Rotation of the kernel's own secrets (docs/operations.md, "Rotating keys"): the API-key pepper
// and the key-encryption key (KEK). The pepper and kek commands are offline, like `nops migrate`:
// they edit the key file named by the configuration (--config, NOPS_*) on this machine — written
// atomically, 0600 — and record each step in the audit trail of the database the configuration
// names. The file is the unit of distribution: copy it to every replica (each reloads it within
// its reload interval, or on SIGHUP). `nops secrets status` asks a running replica which versions
// it holds.

func (c *cli) secretsCmd() *cobra.Command {
	s := &cobra.Command{
		Use:   "secrets",
		Short: "Rotate the API-key pepper and the key-encryption key with no failed request (add, promote, rewrap, retire)",
		Long: "A rotation is staged so that every replica accepts old and new during the overlap:\n" +
			"  1. add      a new version, known to every replica once the file is copied, not yet used\n" +
			"  2. promote  it: new digests and seals use it (copy the file again)\n" +
			"  3. move what uses the old version: API keys move as they are used; `kek rewrap` re-seals\n" +
			"  4. retire   the old version (refused while something uses it, unless --force)\n" +
			"The pepper and kek commands edit the key file of the configuration and record each step in\n" +
			"the audit log of its database. See docs/operations.md, \"Rotating keys\".",
	}
	s.AddCommand(c.secretsStatusCmd(), c.pepperCmd(), c.kekCmd())
	return s
}

// secretsEnv is what an offline rotation step works with.
type secretsEnv struct {
	cfg config.Config
	st  kernel.Store
	ctl *control.Control
	ctx context.Context // carries the operator as the audit records' actor
}

// offline runs fn with the configuration, its store, and a Control recording to its audit log.
func (c *cli) offline(cmd *cobra.Command, fn func(e secretsEnv) error) error {
	cfg, err := c.load(cmd)
	if err != nil {
		return err
	}
	log, err := logger(cmd, cfg)
	if err != nil {
		return err
	}
	st, err := kernel.OpenStore(cmd.Context(), cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	e := secretsEnv{
		cfg: cfg, st: st,
		ctl: control.New(st, nil, nil, nil, control.Options{Logger: log}),
		ctx: principal.NewContext(cmd.Context(), principal.Principal{Subject: operator()}),
	}
	return fn(e)
}

// operator names who runs the command in audit records: "cli:<user>".
func operator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if name := os.Getenv("USER"); name != "" {
		return "cli:" + name
	}
	return "cli:uid-" + strconv.Itoa(os.Getuid())
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// record appends the audit record of a step carried out on a file; a failure says the file did
// change.
func (e secretsEnv) record(s control.SecretStep) error {
	s.Host = hostname()
	if err := e.ctl.RecordSecretStep(e.ctx, s); err != nil {
		return fmt.Errorf("the key file was changed, but its audit record was not written: %w", err)
	}
	return nil
}

// errPepperFromConfig refuses the file steps when the pepper comes from the configuration.
var errPepperFromConfig = errors.New("api_keys.pepper is set: the pepper comes from the configuration, not a file. " +
	"Rotate it there: add the new pepper as api_keys.previous_peppers (\"<version>:<secret>\") on every replica, " +
	"then make it api_keys.pepper/pepper_version and move the old one to previous_peppers, then drop the old one " +
	"once `nops secrets pepper status` shows it unused (docs/operations.md, \"Rotating keys\")")

func (c *cli) pepperCmd() *cobra.Command {
	p := &cobra.Command{Use: "pepper", Short: "Rotate the pepper keying API-key digests (api_keys.pepper_file)"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "The peppers of the file and how many stored API keys use each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				st, err := offlineStatus(e)
				if err != nil {
					return err
				}
				if asJSON {
					return printStatusJSON(cmd.OutOrStdout(), st)
				}
				return printPepperStatus(cmd.OutOrStdout(), st.Pepper, e.cfg.PepperFilePath())
			})
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON (the shape of GET /v1/admin/secrets/status)")

	add := &cobra.Command{
		Use:   "add",
		Short: "Add a generated pepper, pending: replicas that load the file verify keys hashed with it; none is hashed with it yet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				if e.cfg.APIKeys.Pepper != "" {
					return errPepperFromConfig
				}
				path := e.cfg.PepperFilePath()
				v, err := apikey.AddPepper(path)
				if err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: control.SecretPepper, Step: control.StepAdd, Version: v}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added pepper %s (pending) to %s\n"+
					"next: copy the file to every replica; when `nops secrets status --server …` lists %s on each, run `nops secrets pepper promote %s`\n",
					v, path, v, v)
				return nil
			})
		},
	}
	promote := &cobra.Command{
		Use:   "promote VERSION",
		Short: "Make VERSION the current pepper: new and rotated keys are hashed with it, the others move to it as they are used",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				if e.cfg.APIKeys.Pepper != "" {
					return errPepperFromConfig
				}
				path := e.cfg.PepperFilePath()
				prev, err := apikey.PromotePepper(path, args[0])
				if err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: control.SecretPepper, Step: control.StepPromote, Version: args[0], Previous: prev}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "pepper %s is current in %s (was %s)\n"+
					"next: copy the file to every replica; API keys hashed with %s move to %s as they are used. "+
					"When `nops secrets pepper status` shows %s unused, run `nops secrets pepper retire %s`\n",
					args[0], path, prev, prev, args[0], prev, prev)
				return nil
			})
		},
	}
	var force bool
	retire := &cobra.Command{
		Use:   "retire VERSION",
		Short: "Remove a pepper from the file; refused while a live API key still uses it, unless --force",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				if e.cfg.APIKeys.Pepper != "" {
					return errPepperFromConfig
				}
				path, version := e.cfg.PepperFilePath(), args[0]
				_, info, err := apikey.ReadPepperRing(path)
				if err != nil {
					return err
				}
				if err := retirable(version, info.Current, pepperVersions(info)); err != nil {
					return err
				}
				detail := ""
				if err := apikey.CheckRetirePepper(e.ctx, e.st, version, time.Now()); err != nil {
					if !force || !errors.Is(err, apikey.ErrPepperInUse) {
						return fmt.Errorf("%w (--force retires it anyway: those keys stop working)", err)
					}
					detail = "in_use=true"
					fmt.Fprintf(cmd.ErrOrStderr(), "nops: --force: %v\n", err)
				}
				if err := apikey.RetirePepper(path, version); err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: control.SecretPepper, Step: control.StepRetire, Version: version, Forced: detail != "", Detail: detail}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "retired pepper %s from %s\nnext: copy the file to every replica\n", version, path)
				return nil
			})
		},
	}
	retire.Flags().BoolVar(&force, "force", false, "retire even while live API keys use the pepper (they stop working)")
	p.AddCommand(status, add, promote, retire)
	return p
}

func (c *cli) kekCmd() *cobra.Command {
	k := &cobra.Command{Use: "kek", Short: "Rotate the key-encryption key sealing request-signing secrets and CA keys (signing.kek_file)"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "The keys of the file and how many stored sealed values use each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				st, err := offlineStatus(e)
				if err != nil {
					return err
				}
				if asJSON {
					return printStatusJSON(cmd.OutOrStdout(), st)
				}
				return printKEKStatus(cmd.OutOrStdout(), st.KEK, e.cfg.KEKPath())
			})
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON (the shape of GET /v1/admin/secrets/status)")

	add := &cobra.Command{
		Use:   "add",
		Short: "Add a generated key-encryption key, pending: replicas that load the file open what it seals; nothing is sealed with it yet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				path := e.cfg.KEKPath()
				v, err := sealbox.AddFile(path)
				if err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: control.SecretKEK, Step: control.StepAdd, Version: v}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added key %s (pending) to %s\n"+
					"next: copy the file to every replica; when `nops secrets status --server …` lists %s on each, run `nops secrets kek promote %s`\n",
					v, path, v, v)
				return nil
			})
		},
	}
	promote := &cobra.Command{
		Use:   "promote VERSION",
		Short: "Make VERSION the current key-encryption key: new seals use it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				path := e.cfg.KEKPath()
				prev, err := sealbox.PromoteFile(path, args[0])
				if err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: control.SecretKEK, Step: control.StepPromote, Version: args[0], Previous: prev}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %s is current in %s (was %s)\n"+
					"next: copy the file to every replica, then run `nops secrets kek rewrap` and `nops secrets kek retire %s`\n",
					args[0], path, prev, prev)
				return nil
			})
		},
	}
	var batch int
	rewrap := &cobra.Command{
		Use:   "rewrap",
		Short: "Re-seal every request-signing secret and CA key under the current key-encryption key (idempotent)",
		Long: "Opens each sealed value not under the file's current key and seals it again under it, a batch per\n" +
			"transaction, skipping values a rotation changed meanwhile. Run it once the promoted file is on\n" +
			"every replica: a replica without the current key could not open the re-sealed values.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				box, _, err := sealbox.LoadFile(e.cfg.KEKPath())
				if err != nil {
					return err
				}
				prog := newProgress(cmd.ErrOrStderr(), "rewrap")
				res, err := e.ctl.Rewrap(e.ctx, e.st, box, control.RewrapOptions{Batch: batch, Host: hostname(),
					Progress: func(scanned, total int64) {
						prog.update(scanned, total, fmt.Sprintf("rewrap: %d of %d sealed values scanned", scanned, total))
					}})
				prog.finish()
				fmt.Fprintf(cmd.OutOrStdout(), "rewrap under %s: %d scanned, %d re-sealed, %d already current, %d changed meanwhile, %d failed\n",
					box.Current(), res.Scanned, res.Rewrapped, res.Current, res.Changed, res.Failed)
				if err != nil {
					return err
				}
				if res.Changed > 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "values changed meanwhile were rotated under the current key or are left to the next run: run rewrap again")
				}
				return nil
			})
		},
	}
	rewrap.Flags().IntVar(&batch, "batch", 200, "sealed values per transaction")
	var force bool
	retire := &cobra.Command{
		Use:   "retire VERSION",
		Short: "Remove a key-encryption key from the file; refused while a stored value is sealed under it, unless --force",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.offline(cmd, func(e secretsEnv) error {
				path, version := e.cfg.KEKPath(), args[0]
				_, info, err := sealbox.LoadFile(path)
				if err != nil {
					return err
				}
				if err := retirable(version, info.Current, kekVersions(info)); err != nil {
					return err
				}
				detail := ""
				if err := sealbox.CheckRetire(e.ctx, e.st, version); err != nil {
					if !force || !errors.Is(err, sealbox.ErrInUse) {
						return fmt.Errorf("%w (--force retires it anyway: those values can no longer be opened)", err)
					}
					detail = "in_use=true"
					fmt.Fprintf(cmd.ErrOrStderr(), "nops: --force: %v\n", err)
				}
				if err := sealbox.RetireFile(path, version); err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: control.SecretKEK, Step: control.StepRetire, Version: version, Forced: detail != "", Detail: detail}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "retired key %s from %s\nnext: copy the file to every replica\n", version, path)
				return nil
			})
		},
	}
	retire.Flags().BoolVar(&force, "force", false, "retire even while values are sealed under the key (they can no longer be opened)")
	k.AddCommand(status, add, promote, rewrap, retire)
	return k
}

// retirable refuses a version the file lacks or holds as current, before anything is counted.
func retirable(version, current string, versions []string) error {
	switch {
	case version == current:
		return fmt.Errorf("%s is the current version: promote another one first", version)
	case !contains(versions, version):
		return fmt.Errorf("%s is not in the key file (it has %s)", version, strings.Join(versions, ", "))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func pepperVersions(info apikey.PepperFileInfo) []string {
	var out []string
	for _, e := range info.Peppers {
		out = append(out, e.Version)
	}
	return out
}

func kekVersions(info sealbox.FileInfo) []string {
	var out []string
	for _, k := range info.Keys {
		out = append(out, k.Version)
	}
	return out
}

// offlineStatus is the status the key files of the configuration give against its database.
func offlineStatus(e secretsEnv) (control.SecretsStatus, error) {
	src := control.SecretsSource{Store: e.st, PepperSource: "file"}
	if e.cfg.APIKeys.Pepper != "" {
		ps, err := apikey.PeppersFromConfig(e.cfg.APIKeys.PepperVersion, e.cfg.APIKeys.Pepper, e.cfg.APIKeys.PreviousPeppers)
		if err != nil {
			return control.SecretsStatus{}, fmt.Errorf("api_keys.pepper, api_keys.previous_peppers: %w", err)
		}
		src.PepperSource = "config"
		src.Peppers = func() (apikey.PepperRing, map[string]time.Time, error) {
			return apikey.PepperRing{Peppers: ps}, nil, nil
		}
	} else {
		ring, info, err := apikey.ReadPepperRing(e.cfg.PepperFilePath())
		if err != nil {
			return control.SecretsStatus{}, err
		}
		created := map[string]time.Time{}
		for _, p := range info.Peppers {
			created[p.Version] = p.CreatedAt
		}
		src.Peppers = func() (apikey.PepperRing, map[string]time.Time, error) { return ring, created, nil }
	}
	_, kinfo, err := sealbox.LoadFile(e.cfg.KEKPath())
	if err != nil {
		return control.SecretsStatus{}, err
	}
	src.KEK = func() (sealbox.FileInfo, error) { return kinfo, nil }
	return src.Status(e.ctx)
}

// secretsStatusCmd asks a running replica (GET /v1/admin/secrets/status) which versions it
// holds: run it against each replica before promoting or retiring.
func (c *cli) secretsStatusCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Ask a running replica which pepper and key-encryption key versions it holds, and how many stored items use each",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			var doc secretsDoc
			raw, err := api.getJSON(ctx, "/v1/admin/secrets/status", nil, &doc)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "replica %s at %s\n\n", api.base, doc.CheckedAt.UTC().Format(time.RFC3339))
			if err := printPepperDoc(cmd.OutOrStdout(), doc.Pepper, ""); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return printKEKDoc(cmd.OutOrStdout(), doc.KEK, "")
		}),
	}
	f.bind(cmd.Flags(), false, true)
	return cmd
}

// secretsDoc is the answer of GET /v1/admin/secrets/status (api/kernel.yaml, SecretsStatus).
type secretsDoc struct {
	CheckedAt time.Time `json:"checked_at"`
	Pepper    pepperDoc `json:"api_key_pepper"`
	KEK       kekDoc    `json:"kek"`
}

type pepperDoc struct {
	Source      string             `json:"source"`
	Current     string             `json:"current"`
	ReloadError string             `json:"reload_error,omitempty"`
	Versions    []pepperVersionDoc `json:"versions"`
}

type pepperVersionDoc struct {
	Version         string     `json:"version"`
	State           string     `json:"state"`
	CreatedAt       *time.Time `json:"created_at,omitempty"`
	InUse           int64      `json:"in_use"`
	APIKeys         int64      `json:"api_keys"`
	PreviousSecrets int64      `json:"previous_secrets"`
	Inactive        int64      `json:"inactive"`
}

type kekDoc struct {
	Current     string          `json:"current"`
	ReloadError string          `json:"reload_error,omitempty"`
	Versions    []kekVersionDoc `json:"versions"`
}

type kekVersionDoc struct {
	Version           string     `json:"version"`
	State             string     `json:"state"`
	CreatedAt         *time.Time `json:"created_at,omitempty"`
	InUse             int64      `json:"in_use"`
	RequestKeySecrets int64      `json:"request_key_secrets"`
	CAKeys            int64      `json:"ca_keys"`
	SigningKeys       int64      `json:"signing_keys"`
}

// toDoc renders an offline status in the API's shape, so both print (and --json) alike.
func toDoc(st control.SecretsStatus) secretsDoc {
	d := secretsDoc{CheckedAt: st.CheckedAt,
		Pepper: pepperDoc{Source: st.Pepper.Source, Current: st.Pepper.Current, ReloadError: st.Pepper.ReloadError, Versions: []pepperVersionDoc{}},
		KEK:    kekDoc{Current: st.KEK.Current, ReloadError: st.KEK.ReloadError, Versions: []kekVersionDoc{}},
	}
	for _, v := range st.Pepper.Versions {
		d.Pepper.Versions = append(d.Pepper.Versions, pepperVersionDoc{v.Version, string(v.State), timePtr(v.CreatedAt), v.InUse(), v.Keys, v.PreviousSecrets, v.Inactive})
	}
	for _, v := range st.KEK.Versions {
		d.KEK.Versions = append(d.KEK.Versions, kekVersionDoc{v.Version, v.State, timePtr(v.CreatedAt), v.InUse(), v.RequestKeySecrets, v.CAKeys, v.SigningKeys})
	}
	return d
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func printStatusJSON(w io.Writer, st control.SecretsStatus) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(toDoc(st))
}

func printPepperStatus(w io.Writer, st control.PepperStatus, path string) error {
	return printPepperDoc(w, toDoc(control.SecretsStatus{Pepper: st}).Pepper, path)
}

func printKEKStatus(w io.Writer, st control.KEKStatus, path string) error {
	return printKEKDoc(w, toDoc(control.SecretsStatus{KEK: st}).KEK, path)
}

func printPepperDoc(w io.Writer, p pepperDoc, path string) error {
	where := p.Source
	if path != "" && p.Source == "file" {
		where = path
	}
	fmt.Fprintf(w, "API-KEY PEPPER (%s): current %s\n", where, clean(p.Current))
	if p.ReloadError != "" {
		fmt.Fprintf(w, "LAST RELOAD FAILED: %s\n", clean(p.ReloadError))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSTATE\tCREATED\tIN USE\tAPI KEYS\tPREVIOUS SECRETS\tINACTIVE")
	for _, v := range p.Versions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", clean(v.Version), clean(v.State), formatTime(v.CreatedAt), v.InUse, v.APIKeys, v.PreviousSecrets, v.Inactive)
	}
	return tw.Flush()
}

func printKEKDoc(w io.Writer, k kekDoc, path string) error {
	where := "signing.kek_file"
	if path != "" {
		where = path
	}
	fmt.Fprintf(w, "KEY-ENCRYPTION KEY (%s): current %s\n", where, clean(k.Current))
	if k.ReloadError != "" {
		fmt.Fprintf(w, "LAST RELOAD FAILED: %s\n", clean(k.ReloadError))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSTATE\tCREATED\tIN USE\tREQUEST-KEY SECRETS\tCA KEYS\tSIGNING KEYS")
	for _, v := range k.Versions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", clean(v.Version), clean(v.State), formatTime(v.CreatedAt), v.InUse, v.RequestKeySecrets, v.CAKeys, v.SigningKeys)
	}
	return tw.Flush()
}
