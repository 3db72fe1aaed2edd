package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
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

// keyFile is one rotated key file `nops secrets` edits: what differs between the pepper and the
// key-encryption key. The status, add, promote and retire steps are built from it once
// (keyFileCmds); the KEK adds rewrap.
type keyFile struct {
	secret string // the audit records' secret: control.SecretPepper or control.SecretKEK
	noun   string // what one version is called in messages: "pepper", "key"
	use    string // the subcommand
	short  string // the subcommand's summary
	// refuse, when set, refuses every file step for the configuration (a pepper set inline).
	refuse func(config.Config) error
	path   func(config.Config) string
	// versions reads the file: its current version and all of its versions, in file order.
	versions func(path string) (current string, all []string, err error)
	add      func(path string) (version string, err error)
	promote  func(path, version string) (previous string, err error)
	retire   func(path, version string) error
	// inUse says what still uses version; an error matching errInUse is what --force overrides.
	inUse    func(e secretsEnv, version string) error
	errInUse error
	status   func(w io.Writer, st control.SecretsStatus, path string) error
	// Texts of the steps: summaries, the --force flag's help, and what --force costs.
	statusShort, addShort, promoteShort, retireShort, forceHelp, forceCost string
	// promoteNext is the next step printed after promoting version over previous.
	promoteNext func(version, previous string) string
}

func pepperFile() keyFile {
	return keyFile{
		secret: control.SecretPepper, noun: "pepper", use: "pepper",
		short: "Rotate the pepper keying API-key digests (api_keys.pepper_file)",
		refuse: func(cfg config.Config) error {
			if cfg.APIKeys.Pepper != "" {
				return errPepperFromConfig
			}
			return nil
		},
		path: config.Config.PepperFilePath,
		versions: func(path string) (string, []string, error) {
			_, info, err := apikey.ReadPepperRing(path)
			var all []string
			for _, p := range info.Peppers {
				all = append(all, p.Version)
			}
			return info.Current, all, err
		},
		add:     apikey.AddPepper,
		promote: apikey.PromotePepper,
		retire:  apikey.RetirePepper,
		inUse: func(e secretsEnv, version string) error {
			return apikey.CheckRetirePepper(e.ctx, e.st, version, time.Now())
		},
		errInUse: apikey.ErrPepperInUse,
		status: func(w io.Writer, st control.SecretsStatus, path string) error {
			return printPepperStatus(w, st.Pepper, path)
		},
		statusShort:  "The peppers of the file and how many stored API keys use each",
		addShort:     "Add a generated pepper, pending: replicas that load the file verify keys hashed with it; none is hashed with it yet",
		promoteShort: "Make VERSION the current pepper: new and rotated keys are hashed with it, the others move to it as they are used",
		retireShort:  "Remove a pepper from the file; refused while a live API key still uses it, unless --force",
		forceHelp:    "retire even while live API keys use the pepper (they stop working)",
		forceCost:    "those keys stop working",
		promoteNext: func(v, prev string) string {
			return fmt.Sprintf("copy the file to every replica; API keys hashed with %s move to %s as they are used. "+
				"When `nops secrets pepper status` shows %s unused, run `nops secrets pepper retire %s`", prev, v, prev, prev)
		},
	}
}

func kekFile() keyFile {
	return keyFile{
		secret: control.SecretKEK, noun: "key", use: "kek",
		short: "Rotate the key-encryption key sealing request-signing secrets and CA keys (signing.kek_file)",
		path:  config.Config.KEKPath,
		versions: func(path string) (string, []string, error) {
			_, info, err := sealbox.LoadFile(path)
			var all []string
			for _, k := range info.Keys {
				all = append(all, k.Version)
			}
			return info.Current, all, err
		},
		add:     sealbox.AddFile,
		promote: sealbox.PromoteFile,
		retire:  sealbox.RetireFile,
		inUse: func(e secretsEnv, version string) error {
			return sealbox.CheckRetire(e.ctx, e.st, version)
		},
		errInUse:     sealbox.ErrInUse,
		status:       func(w io.Writer, st control.SecretsStatus, path string) error { return printKEKStatus(w, st.KEK, path) },
		statusShort:  "The keys of the file and how many stored sealed values use each",
		addShort:     "Add a generated key-encryption key, pending: replicas that load the file open what it seals; nothing is sealed with it yet",
		promoteShort: "Make VERSION the current key-encryption key: new seals use it",
		retireShort:  "Remove a key-encryption key from the file; refused while a stored value is sealed under it, unless --force",
		forceHelp:    "retire even while values are sealed under the key (they can no longer be opened)",
		forceCost:    "those values can no longer be opened",
		promoteNext: func(_, prev string) string {
			return fmt.Sprintf("copy the file to every replica, then run `nops secrets kek rewrap` and `nops secrets kek retire %s`", prev)
		},
	}
}

// step runs fn offline on f's file, unless the configuration refuses file steps.
func (c *cli) step(cmd *cobra.Command, f keyFile, fn func(e secretsEnv, path string) error) error {
	return c.offline(cmd, func(e secretsEnv) error {
		if f.refuse != nil {
			if err := f.refuse(e.cfg); err != nil {
				return err
			}
		}
		return fn(e, f.path(e.cfg))
	})
}

// keyFileCmds returns f's subcommand with its status, add, promote and retire steps.
func (c *cli) keyFileCmds(f keyFile) *cobra.Command {
	root := &cobra.Command{Use: f.use, Short: f.short}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: f.statusShort,
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
				return f.status(cmd.OutOrStdout(), st, f.path(e.cfg))
			})
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON (the shape of GET /v1/admin/secrets/status)")

	add := &cobra.Command{
		Use:   "add",
		Short: f.addShort,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.step(cmd, f, func(e secretsEnv, path string) error {
				v, err := f.add(path)
				if err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: f.secret, Step: control.StepAdd, Version: v}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added %s %s (pending) to %s\n"+
					"next: copy the file to every replica; when `nops secrets status --server …` lists %s on each, run `nops secrets %s promote %s`\n",
					f.noun, v, path, v, f.use, v)
				return nil
			})
		},
	}
	promote := &cobra.Command{
		Use:   "promote VERSION",
		Short: f.promoteShort,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.step(cmd, f, func(e secretsEnv, path string) error {
				prev, err := f.promote(path, args[0])
				if err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: f.secret, Step: control.StepPromote, Version: args[0], Previous: prev}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s is current in %s (was %s)\nnext: %s\n", f.noun, args[0], path, prev, f.promoteNext(args[0], prev))
				return nil
			})
		},
	}
	var force bool
	retire := &cobra.Command{
		Use:   "retire VERSION",
		Short: f.retireShort,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.step(cmd, f, func(e secretsEnv, path string) error {
				version := args[0]
				current, all, err := f.versions(path)
				if err != nil {
					return err
				}
				if err := retirable(version, current, all); err != nil {
					return err
				}
				detail := ""
				if err := f.inUse(e, version); err != nil {
					if !force || !errors.Is(err, f.errInUse) {
						return fmt.Errorf("%w (--force retires it anyway: %s)", err, f.forceCost)
					}
					detail = "in_use=true"
					fmt.Fprintf(cmd.ErrOrStderr(), "nops: --force: %v\n", err)
				}
				if err := f.retire(path, version); err != nil {
					return err
				}
				if err := e.record(control.SecretStep{Secret: f.secret, Step: control.StepRetire, Version: version, Forced: detail != "", Detail: detail}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "retired %s %s from %s\nnext: copy the file to every replica\n", f.noun, version, path)
				return nil
			})
		},
	}
	retire.Flags().BoolVar(&force, "force", false, f.forceHelp)
	root.AddCommand(status, add, promote, retire)
	return root
}

func (c *cli) pepperCmd() *cobra.Command { return c.keyFileCmds(pepperFile()) }

func (c *cli) kekCmd() *cobra.Command {
	k := c.keyFileCmds(kekFile())
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
	k.AddCommand(rewrap)
	return k
}

// retirable refuses a version the file lacks or holds as current, before anything is counted.
func retirable(version, current string, versions []string) error {
	switch {
	case version == current:
		return fmt.Errorf("%s is the current version: promote another one first", version)
	case !slices.Contains(versions, version):
		return fmt.Errorf("%s is not in the key file (it has %s)", version, strings.Join(versions, ", "))
	}
	return nil
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
