package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// agentDoc is what the tables show of an Agent (api/kernel.yaml).
type agentDoc struct {
	ID           string            `json:"id"`
	Tenant       string            `json:"tenant"`
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Endpoint     string            `json:"endpoint"`
	Criticality  string            `json:"criticality"`
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Capabilities []struct {
		Name string `json:"name"`
	} `json:"capabilities"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	Load        struct {
		InFlight     *int64   `json:"in_flight"`
		P50Ms        *float64 `json:"p50_ms"`
		P95Ms        *float64 `json:"p95_ms"`
		ErrorRate    *float64 `json:"error_rate"`
		FreeCapacity *int64   `json:"free_capacity"`
	} `json:"load"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Revision  int64     `json:"revision"`
}

func (a agentDoc) capabilities() string {
	names := make([]string, len(a.Capabilities))
	for i, c := range a.Capabilities {
		names[i] = c.Name
	}
	return orDash(strings.Join(names, ","))
}

func (a agentDoc) labels() string {
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + a.Labels[k]
	}
	return orDash(strings.Join(keys, ","))
}

func (a agentDoc) load() string {
	var parts []string
	if l := a.Load.InFlight; l != nil {
		parts = append(parts, fmt.Sprintf("in_flight=%d", *l))
	}
	if l := a.Load.P50Ms; l != nil {
		parts = append(parts, fmt.Sprintf("p50=%gms", *l))
	}
	if l := a.Load.P95Ms; l != nil {
		parts = append(parts, fmt.Sprintf("p95=%gms", *l))
	}
	if l := a.Load.ErrorRate; l != nil {
		parts = append(parts, fmt.Sprintf("error_rate=%g", *l))
	}
	if l := a.Load.FreeCapacity; l != nil {
		parts = append(parts, fmt.Sprintf("free_capacity=%d", *l))
	}
	return orDash(strings.Join(parts, " "))
}

func (c *cli) agentsCmd() *cobra.Command {
	var f clientFlags
	ag := &cobra.Command{
		Use:   "agents",
		Short: "Manage the agent registry of a running kernel",
		Long: "Agents live in the tenant of the credential; SUPER_ADMIN names the tenant with --tenant.\n" +
			"Specifications are JSON files shaped as AgentSpec in api/kernel.yaml.",
	}
	f.bind(ag.PersistentFlags(), true, true)

	agentPath := func(id string, rest ...string) string {
		return "/v1/agents/" + url.PathEscape(id) + strings.Join(rest, "")
	}

	var registerFile string
	register := &cobra.Command{
		Use:     "register -f AGENT.json",
		Short:   "Register an agent from a JSON specification (-f - reads standard input)",
		Example: `  nops agents register -f agent.json` + "\n" + `  cat agent.json | nops agents register -f -`,
		Args:    cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			spec, err := readInput(cmd, registerFile)
			if err != nil {
				return err
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, "/v1/agents", q, spec, nil, nil)
			if err != nil {
				return err
			}
			return showAgent(cmd.OutOrStdout(), api, resp)
		}),
	}
	register.Flags().StringVarP(&registerFile, "file", "f", "", "agent specification (JSON); - for standard input")
	_ = register.MarkFlagRequired("file")

	var (
		capability, selector string
		statuses             []string
		pageSize             int
	)
	list := &cobra.Command{
		Use:     "list",
		Short:   "List agents, following every page",
		Example: `  nops agents list --capability text.summarize --selector 'env=prod,tier!=cache' --status healthy,stale`,
		Args:    cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			if capability != "" {
				q.Set("capability", capability)
			}
			if selector != "" {
				q.Set("selector", selector)
			}
			if len(statuses) > 0 {
				q.Set("status", strings.Join(statuses, ","))
			}
			items, err := api.listAll(ctx, "/v1/agents", q, pageSize, progressWriter(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			agents, err := decodeItems[agentDoc](items)
			if err != nil {
				return err
			}
			now := time.Now()
			rows := make([][]string, 0, len(agents))
			for _, a := range agents {
				rows = append(rows, []string{a.ID, a.Name, a.Version, a.Status, ago(a.HeartbeatAt, now), a.capabilities()})
			}
			return table(cmd.OutOrStdout(), []string{"ID", "NAME", "VERSION", "STATUS", "HEARTBEAT", "CAPABILITIES"}, rows)
		}),
	}
	list.Flags().StringVar(&capability, "capability", "", "only agents offering this capability")
	list.Flags().StringVar(&selector, "selector", "", "label selector, e.g. env=prod,tier!=cache,gpu,!legacy")
	list.Flags().StringSliceVar(&statuses, "status", nil, "only agents in these statuses: healthy, stale, zombie (comma-separated or repeated)")
	bindPageSize(list, &pageSize)

	get := &cobra.Command{
		Use:   "get AGENT_ID",
		Short: "Show an agent, with its current ETag",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			resp, err := api.do(ctx, http.MethodGet, agentPath(args[0]), q, nil, nil)
			if err != nil {
				return err
			}
			return showAgent(cmd.OutOrStdout(), api, resp)
		}),
	}

	var (
		updateFile string
		ifMatch    string
	)
	update := &cobra.Command{
		Use:   "update AGENT_ID -f AGENT.json",
		Short: "Replace an agent's specification",
		Long: "Replaces the agent's specification with the file's (-f - reads standard input). The kernel\n" +
			"requires If-Match: with --if-match the update applies only if the agent still has that ETag\n" +
			"(shown by `nops agents get`), else it fails with 412 Precondition Failed. Without --if-match\n" +
			"the command first GETs the agent and uses its current ETag, so it overwrites whatever is\n" +
			"there now; a change made between that read and the write still fails with 412.",
		Args: cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			spec, err := readInput(cmd, updateFile)
			if err != nil {
				return err
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			etag := ifMatch
			if etag == "" {
				cur, err := api.do(ctx, http.MethodGet, agentPath(args[0]), q, nil, nil)
				if err != nil {
					return err
				}
				if etag = cur.header.Get("ETag"); etag == "" {
					return fmt.Errorf("the kernel sent no ETag for agent %s: pass --if-match", args[0])
				}
			}
			resp, err := api.sendJSON(ctx, http.MethodPut, agentPath(args[0]), q, spec, http.Header{"If-Match": {etag}}, nil)
			if err != nil {
				return err
			}
			return showAgent(cmd.OutOrStdout(), api, resp)
		}),
	}
	update.Flags().StringVarP(&updateFile, "file", "f", "", "new agent specification (JSON); - for standard input")
	update.Flags().StringVar(&ifMatch, "if-match", "", "ETag the agent must still have (default: its current one, read first)")
	_ = update.MarkFlagRequired("file")

	del := &cobra.Command{
		Use:   "delete AGENT_ID",
		Short: "Deregister an agent",
		Args:  cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			if _, err := api.do(ctx, http.MethodDelete, agentPath(args[0]), q, nil, nil); err != nil {
				return err
			}
			if !api.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "agent %s deregistered\n", args[0])
			}
			return nil
		}),
	}

	var (
		inFlight, freeCapacity int64
		p50, p95, errorRate    float64
		loadFlags              = []string{"in-flight", "p50-ms", "p95-ms", "error-rate", "free-capacity"}
	)
	heartbeat := &cobra.Command{
		Use:     "heartbeat AGENT_ID",
		Short:   "Report that an agent is alive, with optional load figures",
		Example: `  nops agents heartbeat agt_01J… --in-flight 3 --p95-ms 40 --error-rate 0.01`,
		Args:    cobra.ExactArgs(1),
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, args []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			// Only the figures given are sent; without any, the heartbeat has no body.
			load := map[string]any{}
			values := map[string]any{"in-flight": inFlight, "p50-ms": p50, "p95-ms": p95, "error-rate": errorRate, "free-capacity": freeCapacity}
			for _, name := range loadFlags {
				if cmd.Flags().Changed(name) {
					load[strings.ReplaceAll(name, "-", "_")] = values[name]
				}
			}
			var body any
			if len(load) > 0 {
				body = load
			}
			var res struct {
				AgentID        string    `json:"agent_id"`
				Status         string    `json:"status"`
				PreviousStatus string    `json:"previous_status"`
				HeartbeatAt    time.Time `json:"heartbeat_at"`
			}
			resp, err := api.sendJSON(ctx, http.MethodPost, agentPath(args[0], "/heartbeat"), q, body, nil, &res)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), resp.body)
			}
			return details(cmd.OutOrStdout(), [][2]string{
				{"AGENT", res.AgentID},
				{"STATUS", res.Status},
				{"PREVIOUS", orDash(res.PreviousStatus)},
				{"HEARTBEAT", res.HeartbeatAt.UTC().Format(time.RFC3339Nano)},
			})
		}),
	}
	hf := heartbeat.Flags()
	hf.Int64Var(&inFlight, "in-flight", 0, "requests in flight")
	hf.Float64Var(&p50, "p50-ms", 0, "median latency, ms")
	hf.Float64Var(&p95, "p95-ms", 0, "95th percentile latency, ms")
	hf.Float64Var(&errorRate, "error-rate", 0, "error rate, 0 to 1")
	hf.Int64Var(&freeCapacity, "free-capacity", 0, "requests the agent can still take")

	ag.AddCommand(register, list, get, update, del, heartbeat)
	return ag
}

// showAgent prints one agent; in a table, with the ETag the response carried.
func showAgent(w io.Writer, api *apiClient, resp *apiResponse) error {
	if api.json() {
		return printJSON(w, resp.body)
	}
	var a agentDoc
	if err := decodeJSON(resp.body, &a); err != nil {
		return err
	}
	return details(w, [][2]string{
		{"ID", a.ID},
		{"TENANT", a.Tenant},
		{"NAME", a.Name},
		{"VERSION", a.Version},
		{"STATUS", a.Status},
		{"CRITICALITY", a.Criticality},
		{"ENDPOINT", a.Endpoint},
		{"CAPABILITIES", a.capabilities()},
		{"LABELS", a.labels()},
		{"HEARTBEAT", a.HeartbeatAt.UTC().Format(time.RFC3339) + " (" + ago(a.HeartbeatAt, time.Now()) + ")"},
		{"LOAD", a.load()},
		{"CREATED", a.CreatedAt.UTC().Format(time.RFC3339)},
		{"UPDATED", a.UpdatedAt.UTC().Format(time.RFC3339)},
		{"REVISION", strconv.FormatInt(a.Revision, 10)},
		{"ETAG", orDash(resp.header.Get("ETag"))},
	})
}
