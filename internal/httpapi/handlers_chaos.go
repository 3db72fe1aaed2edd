package httpapi

import (
	"context"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/chaos"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
)

// The chaos toggles (/v1/admin/chaos, docs/chaos.md): this replica's fault rules. They need system
// scopes, which only a SUPER_ADMIN holds; changes are audited by internal/control in the global
// tree.

func (h *handlers) GetChaos(ctx context.Context, _ gen.GetChaosRequestObject) (gen.GetChaosResponseObject, error) {
	rules, enabled := h.deps.Control.ChaosRules(ctx)
	return gen.GetChaos200JSONResponse(chaosOut(rules, enabled)), nil
}

func (h *handlers) SetChaos(ctx context.Context, req gen.SetChaosRequestObject) (gen.SetChaosResponseObject, error) {
	if req.Body == nil {
		return nil, errs.Field("body", "required")
	}
	rules := make([]chaos.Rule, 0, len(req.Body.Rules))
	for _, r := range req.Body.Rules {
		rules = append(rules, chaos.Rule{
			Target:         chaos.Target(r.Target),
			Latency:        time.Duration(deref(r.LatencyMs)) * time.Millisecond,
			LatencyPercent: deref(r.LatencyPercent),
			ErrorPercent:   deref(r.ErrorPercent),
		})
	}
	err := h.deps.Control.SetChaos(ctx, rules)
	if e := errs.As(err); e != nil && e.Code == errs.Invalid {
		for i := range e.Fields {
			name := e.Fields[i].Name
			if strings.HasSuffix(name, ".latency") {
				name += "_ms" // chaos.Rule.Latency is latency_ms in the API
			}
			e.Fields[i].Name = "body." + name
		}
	}
	if err != nil {
		return nil, err
	}
	rules, enabled := h.deps.Control.ChaosRules(ctx)
	return gen.SetChaos200JSONResponse(chaosOut(rules, enabled)), nil
}

func chaosOut(rules []chaos.Rule, enabled bool) gen.Chaos {
	out := gen.Chaos{Enabled: enabled, Rules: make([]gen.ChaosRule, 0, len(rules))}
	for _, r := range rules {
		out.Rules = append(out.Rules, gen.ChaosRule{
			Target:         gen.ChaosRuleTarget(r.Target),
			ErrorPercent:   &r.ErrorPercent,
			LatencyMs:      new(r.Latency.Milliseconds()),
			LatencyPercent: &r.LatencyPercent,
		})
	}
	return out
}
