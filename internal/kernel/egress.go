package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/errs"
)

// egressPolicy is the configured address policy for calls to agents (without a signed
// allow-list).
func egressPolicy(cfg config.Config) (egress.Policy, error) {
	allow, err := config.ParsePrefixList(cfg.Egress.Allow)
	if err != nil {
		return egress.Policy{}, fmt.Errorf("egress.allow: %w", err)
	}
	deny, err := config.ParsePrefixList(cfg.Egress.Deny)
	if err != nil {
		return egress.Policy{}, fmt.Errorf("egress.deny: %w", err)
	}
	return egress.Policy{AllowLoopback: cfg.LoopbackAllowed(), AllowPrivate: cfg.Egress.AllowPrivate, Allow: allow, Deny: deny}, nil
}

// otlpEndpoint is the OTLP/HTTP trace endpoint the exporter will use, "" when none is set.
func otlpEndpoint() string {
	if e := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
}

// buildGate makes the egress gate every outbound connection goes through (docs/egress.md).
// With egress.allowlist_file the signed list decides (a tampered file: no kernel); without it
// the configuration describes the list: agents under the egress.* flags, the OTLP exporter to
// its configured endpoint only, every other service nowhere.
func buildGate(cfg config.Config, logger *slog.Logger) (*egress.Gate, error) {
	deny, err := config.ParsePrefixList(cfg.Egress.Deny)
	if err != nil {
		return nil, fmt.Errorf("egress.deny: %w", err)
	}
	if cfg.Egress.AllowlistFile != "" {
		keys, err := egress.ParseVerifierKeys(cfg.Egress.AllowlistKeys)
		if err != nil {
			return nil, fmt.Errorf("egress.allowlist_keys: %w", err)
		}
		return egress.NewGate(egress.GateConfig{
			// The signed rules decide loopback and private addresses; the address policy keeps
			// the always-refused ranges and egress.deny.
			AgentsPolicy: egress.Policy{AllowLoopback: true, AllowPrivate: true, Deny: deny},
			Deny:         deny,
			File:         cfg.Egress.AllowlistFile,
			Keys:         keys,
			Logger:       logger,
		})
	}
	pol, err := egressPolicy(cfg)
	if err != nil {
		return nil, err
	}
	services := map[string]*egress.Rules{
		egress.ServiceAgents: egress.FlagRules(cfg.Egress.AllowPublic, egress.Action(cfg.Egress.ViolationAction)),
	}
	if ep := otlpEndpoint(); ep != "" {
		host, port, err := egress.EndpointHostPort(ep)
		if err != nil {
			return nil, fmt.Errorf("OTLP endpoint: %w", err)
		}
		services[egress.ServiceOTLP] = egress.EndpointRules(host, port)
	}
	return egress.NewGate(egress.GateConfig{AgentsPolicy: pol, Deny: deny, List: egress.ConfigList(services), Logger: logger})
}

// otlpClient is the HTTP client of the OTLP exporter, through the gate.
func otlpClient(g *egress.Gate) *http.Client {
	return egress.Client(g.Transport(egress.ServiceOTLP, egress.TransportOptions{}))
}

// egressAudit records what the gate decides and runs the rollback actions: refused agent calls
// are audited by the invoke path (invoke.egress_refused, per call) and handed to OnAgentRefused;
// refusals of the other services are audited here at most once a minute per destination (an
// exporter retrying every few seconds must not flood the audit log; every refusal is counted in
// nops_egress_refused_total); allow-list loads and refusals are audited.
type egressAudit struct {
	gate   *egress.Gate
	ctl    *control.Control
	logger *slog.Logger
	now    func() time.Time

	mu          sync.Mutex
	lastAudited map[string]time.Time // service refusals, by destination and reason
	rollingBack map[string]bool      // agents being deregistered, by tenant/agent
	wg          sync.WaitGroup
}

// serviceRefusalEvery is how often a refused destination of a kernel service is audited.
const serviceRefusalEvery = time.Minute

func newEgressAudit(g *egress.Gate, ctl *control.Control, logger *slog.Logger) *egressAudit {
	a := &egressAudit{gate: g, ctl: ctl, logger: logger, now: time.Now, lastAudited: map[string]time.Time{}, rollingBack: map[string]bool{}}
	g.SetHooks(egress.GateHooks{Refused: a.refused, Loaded: a.loaded})
	return a
}

func (a *egressAudit) refused(ctx context.Context, b *egress.BlockedError) {
	if b.Service == egress.ServiceAgents {
		return // audited per call by the invoke path, which knows the agent
	}
	key := b.Service + " " + b.Addr.String() + " " + strconv.Itoa(int(b.Port)) + " " + b.Reason
	now := a.now()
	a.mu.Lock()
	if now.Sub(a.lastAudited[key]) < serviceRefusalEvery {
		a.mu.Unlock()
		return
	}
	a.lastAudited[key] = now
	a.mu.Unlock()
	if err := a.ctl.Deny(context.WithoutCancel(ctx), "", control.ActionEgressServiceRefused, "egress/"+b.Service, b.Error()); err != nil {
		a.logger.ErrorContext(ctx, "audit a refused egress", "service", b.Service, "error", err)
	}
}

func (a *egressAudit) loaded(ctx context.Context, l *egress.AllowList, err error) {
	if err != nil {
		if aerr := a.ctl.Deny(ctx, "", control.ActionEgressAllowlist, "egress/allowlist", err.Error()); aerr != nil {
			a.logger.ErrorContext(ctx, "audit a refused allow-list", "error", aerr)
		}
		return
	}
	reason := fmt.Sprintf("loaded serial %d signed by %s, sha256 %s", l.Serial, l.Signer, l.SHA256)
	if aerr := a.ctl.Allow(ctx, "", control.ActionEgressAllowlist, "egress/allowlist", reason); aerr != nil {
		a.logger.ErrorContext(ctx, "audit a loaded allow-list", "error", aerr)
	}
}

// OnAgentRefused runs the tenant's rollback action for a call the gate refused: with
// deregister_agent the agent is deregistered by the kernel (audited agent.deregister with the
// violation as reason, agent.deregistered published), once, off the caller's path.
func (a *egressAudit) OnAgentRefused(tenantID, agentID string, b *egress.BlockedError) {
	if a.gate.Rules(egress.ServiceAgents, tenantID).Action != egress.ActionDeregister {
		return
	}
	key := tenantID + "/" + agentID
	a.mu.Lock()
	if a.rollingBack[key] {
		a.mu.Unlock()
		return
	}
	a.rollingBack[key] = true
	a.mu.Unlock()
	a.wg.Go(func() {
		defer func() {
			a.mu.Lock()
			delete(a.rollingBack, key)
			a.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := a.ctl.RollbackAgent(ctx, tenantID, agentID, b.Error())
		if errs.Is(err, errs.NotFound) {
			return // already gone: another replica or call rolled it back
		}
		if err != nil {
			a.logger.Error("egress rollback: deregister the agent", "tenant", tenantID, "agent", agentID, "error", err)
			return
		}
		a.logger.Warn("egress rollback: agent deregistered", "tenant", tenantID, "agent", agentID, "violation", b.Error())
	})
}

// Close waits for rollbacks in progress.
func (a *egressAudit) Close() error {
	a.wg.Wait()
	return nil
}
