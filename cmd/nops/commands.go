package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nops-kernel/nops/internal/buildinfo"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/telemetry"
)

// cli holds what the commands share: the environment lookup, signal source and config flags.
type cli struct {
	env        func(string) (string, bool)
	signals    func(chan<- os.Signal) func()
	configFile string
}

func newRootCmd(env func(string) (string, bool), signals func(chan<- os.Signal) func()) *cobra.Command {
	c := &cli{env: env, signals: signals}
	root := &cobra.Command{
		Use:           "nops",
		Short:         "NOPS Kernel: a control plane for fleets of software and AI agents",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&c.configFile, "config", "", "YAML configuration file (env NOPS_CONFIG)")
	for _, f := range config.Fields() {
		if f.Flag != "" {
			root.PersistentFlags().String(f.Flag, "", fmt.Sprintf("%s (env %s, YAML %s)", f.Doc, f.Env, f.Path))
		}
	}
	root.AddCommand(c.serverCmd(), c.versionCmd(), c.migrateCmd(), c.configCmd(), c.withRemoteAudit(c.auditCmd()), c.loginCmd(), c.tenantsCmd(), c.agentsCmd(), c.keysCmd())
	root.AddCommand(c.dlqCmd(), c.eventsCmd()) // the event bus console (dlq.go, events.go)
	root.AddCommand(c.policyCmd())             // ABAC policy tests (policy.go)
	// The perimeter's managed state (policies.go, ratelimits.go, requestkeys.go).
	root.AddCommand(c.policiesCmd(), c.rateLimitsCmd(), c.requestKeysCmd())
	root.AddCommand(c.flagsCmd())    // feature flags (flags.go)
	root.AddCommand(c.identityCmd()) // workload identity: SVIDs and the trust bundle (identity.go)
	root.AddCommand(c.secretsCmd())  // rotation of the API-key pepper and the key-encryption key (secrets.go)
	// Rotation of the token signing keys (admin_signingkeys.go).
	root.AddCommand(c.signingKeysCmd())
	root.AddCommand(c.egressCmd()) // signed egress allow-lists (egress.go)
	return root
}

// load reads the configuration: defaults < --config file < NOPS_* environment < flags.
func (c *cli) load(cmd *cobra.Command) (config.Config, error) {
	file := c.configFile
	if file == "" {
		file, _ = c.env("NOPS_CONFIG")
	}
	flags := map[string]string{}
	for _, f := range config.Fields() {
		if f.Flag == "" {
			continue
		}
		if fl := cmd.Flags().Lookup(f.Flag); fl != nil && fl.Changed {
			flags[f.Flag] = fl.Value.String()
		}
	}
	return config.Load(config.Sources{File: file, Env: c.env, Flags: flags})
}

// logger writes JSON logs to the command's stderr.
func logger(cmd *cobra.Command, cfg config.Config) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	return telemetry.NewLogger(cmd.ErrOrStderr(), lvl), nil
}

func (c *cli) serverCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "server",
		Short: "Run the kernel (embedded SQLite and JetStream unless configured otherwise)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			log, err := logger(cmd, cfg)
			if err != nil {
				return err
			}
			// The first SIGINT/SIGTERM starts a graceful shutdown; a second one exits at once.
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			sigs := make(chan os.Signal, 2)
			stop := c.signals(sigs)
			defer stop()
			go func() {
				select {
				case <-sigs:
				case <-ctx.Done():
					return
				}
				log.Info("signal received: shutting down (send another to exit at once)")
				cancel()
				select {
				case <-sigs:
					fmt.Fprintln(cmd.ErrOrStderr(), "nops: second signal, exiting now")
					os.Exit(130)
				case <-time.After(24 * time.Hour):
				}
			}()
			k, err := kernel.New(ctx, cfg, kernel.Options{Logger: log, Out: cmd.ErrOrStderr(), Version: buildinfo.Version(), Commit: buildinfo.Commit()})
			if err != nil {
				return err
			}
			// SIGHUP reloads what can change without a restart: the TLS certificate files, the
			// API-key pepper file and the key-encryption key file.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					if err := k.Reload(ctx); err != nil {
						log.Warn("reload on SIGHUP failed; what the refused file would replace stays in use", "error", err.Error())
					} else {
						log.Info("reloaded on SIGHUP")
					}
				}
			}()
			runErr := k.Run(ctx)
			closeErr := k.Close()
			if err := errors.Join(runErr, closeErr); err != nil {
				return err
			}
			log.Info("nops kernel stopped")
			return nil
		},
	}
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "nops %s (commit %s)\n", buildinfo.Version(), buildinfo.Commit())
		},
	}
}

func (c *cli) migrateCmd() *cobra.Command {
	m := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back or list database migrations",
	}
	withStore := func(cmd *cobra.Command, fn func(ctx context.Context, st kernel.Store) error) error {
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
		return errors.Join(fn(cmd.Context(), st), st.Close())
	}
	status := func(cmd *cobra.Command, ctx context.Context, st kernel.Store) error {
		rows, err := st.MigrationStatus(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT")
		for _, r := range rows {
			state, at := "pending", ""
			if r.Applied {
				state, at = "applied", r.AppliedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.Version, r.Name, state, at)
		}
		return tw.Flush()
	}
	m.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(ctx context.Context, st kernel.Store) error {
				if err := st.MigrateUp(ctx); err != nil {
					return err
				}
				return status(cmd, ctx, st)
			})
		},
	}, &cobra.Command{
		Use:   "down",
		Short: "Roll back the most recent migration (tables it created are dropped)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(ctx context.Context, st kernel.Store) error {
				if err := st.MigrateDown(ctx); err != nil {
					return err
				}
				return status(cmd, ctx, st)
			})
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "List migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(ctx context.Context, st kernel.Store) error { return status(cmd, ctx, st) })
		},
	})
	return m
}

func (c *cli) configCmd() *cobra.Command {
	cfgCmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var format string
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration with secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "markdown":
				_, err := fmt.Fprint(cmd.OutOrStdout(), config.MarkdownTable())
				return err
			case "yaml":
			default:
				return fmt.Errorf("--format: must be one of yaml, markdown, got %q", format)
			}
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			b, err := cfg.Redacted().YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	print.Flags().StringVar(&format, "format", "yaml", "yaml (effective configuration) or markdown (the settings table)")
	cfgCmd.AddCommand(print)
	return cfgCmd
}
