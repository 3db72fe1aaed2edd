package flags

import (
	"context"
	"fmt"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/nops-kernel/nops/internal/tenant"
)

// ProviderName is the provider's name in OpenFeature metadata.
const ProviderName = "nops-kernel"

// TenantResolver fills in a tenant's name and status from its id for rules that read them.
type TenantResolver func(ctx context.Context, id string) (Tenant, error)

// Provider is the Evaluator behind the OpenFeature provider interface, so kernel code and
// add-ons evaluate flags with the standard client API:
//
//	api := isolated.NewAPI()
//	_ = api.SetProviderAndWait(ctx, flags.NewProvider(evaluator, resolver))
//	on, _ := api.NewClient().BooleanValue(ctx, "new-router", false, openfeature.NewEvaluationContext(tenantID, nil))
//
// The targeting key is the tenant id; the evaluation context's other attributes are the rules'
// `attributes`. A disabled flag answers the caller's default value (reason DISABLED), as the
// OpenFeature specification has it; an unknown flag is FLAG_NOT_FOUND and a boolean flag asked
// for a string (or the reverse) is TYPE_MISMATCH, both with the caller's default value.
type Provider struct {
	eval    *Evaluator
	resolve TenantResolver
}

var _ openfeature.FeatureProvider = (*Provider)(nil)

// NewProvider returns a provider over e; resolve may be nil (rules then see only tenant.id).
func NewProvider(e *Evaluator, resolve TenantResolver) *Provider {
	return &Provider{eval: e, resolve: resolve}
}

// Metadata implements openfeature.FeatureProvider.
func (p *Provider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: ProviderName} }

// Hooks implements openfeature.FeatureProvider.
func (p *Provider) Hooks() []openfeature.Hook { return nil }

// subject builds the rules' input from the flattened evaluation context.
// The tenant's name and status are resolved only when rules will read them (resolve does I/O).
func (p *Provider) subject(ctx context.Context, flat openfeature.FlattenedContext, needTenant bool) (Subject, *openfeature.ResolutionError) {
	id, _ := flat[openfeature.TargetingKey].(string)
	if id == "" {
		e := openfeature.NewTargetingKeyMissingResolutionError("the targeting key must be the tenant id")
		return Subject{}, &e
	}
	if !tenant.ValidID(id) {
		e := openfeature.NewInvalidContextResolutionError("the targeting key is not a tenant id (ten_…)")
		return Subject{}, &e
	}
	s := Subject{Tenant: Tenant{ID: id}, Attributes: make(map[string]any, len(flat))}
	for k, v := range flat {
		if k != openfeature.TargetingKey {
			s.Attributes[k] = v
		}
	}
	if p.resolve != nil && needTenant {
		t, err := p.resolve(ctx, id)
		if err == nil {
			t.ID = id
			s.Tenant = t
		}
	}
	return s, nil
}

// evaluate resolves flag as type want; ok false means the detail carries an error.
func (p *Provider) evaluate(ctx context.Context, flag string, want Type, flat openfeature.FlattenedContext) (Result, openfeature.ProviderResolutionDetail, bool) {
	f, found := p.eval.Flag(flag)
	if !found {
		return Result{}, openfeature.ProviderResolutionDetail{
			ResolutionError: openfeature.NewFlagNotFoundResolutionError(fmt.Sprintf("flag %q not found", flag)),
			Reason:          openfeature.ErrorReason,
		}, false
	}
	if f.Type != want {
		return Result{}, openfeature.ProviderResolutionDetail{
			ResolutionError: openfeature.NewTypeMismatchResolutionError(fmt.Sprintf("flag %q is of type %s", flag, f.Type)),
			Reason:          openfeature.ErrorReason,
		}, false
	}
	s, rerr := p.subject(ctx, flat, f.Enabled && len(f.Rules) > 0)
	if rerr != nil {
		return Result{}, openfeature.ProviderResolutionDetail{ResolutionError: *rerr, Reason: openfeature.ErrorReason}, false
	}
	res, found := p.eval.Evaluate(ctx, flag, s)
	if !found { // deleted between the two reads
		return Result{}, openfeature.ProviderResolutionDetail{
			ResolutionError: openfeature.NewFlagNotFoundResolutionError(fmt.Sprintf("flag %q not found", flag)),
			Reason:          openfeature.ErrorReason,
		}, false
	}
	d := openfeature.ProviderResolutionDetail{
		Reason:       openfeature.Reason(res.Reason),
		Variant:      res.Variant,
		FlagMetadata: openfeature.FlagMetadata{"revision": res.Revision},
	}
	return res, d, res.Reason != ReasonDisabled
}

// BooleanEvaluation implements openfeature.FeatureProvider.
func (p *Provider) BooleanEvaluation(ctx context.Context, flag string, defaultValue bool, flat openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	res, d, ok := p.evaluate(ctx, flag, TypeBoolean, flat)
	if !ok {
		if d.Reason == openfeature.DisabledReason {
			d.Variant = ""
		}
		return openfeature.BoolResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return openfeature.BoolResolutionDetail{Value: res.Bool(), ProviderResolutionDetail: d}
}

// StringEvaluation implements openfeature.FeatureProvider: the variant of a variant flag.
func (p *Provider) StringEvaluation(ctx context.Context, flag string, defaultValue string, flat openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	res, d, ok := p.evaluate(ctx, flag, TypeVariant, flat)
	if !ok {
		if d.Reason == openfeature.DisabledReason {
			d.Variant = ""
		}
		return openfeature.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return openfeature.StringResolutionDetail{Value: res.Variant, ProviderResolutionDetail: d}
}

// FloatEvaluation implements openfeature.FeatureProvider: the kernel has no numeric flags.
func (p *Provider) FloatEvaluation(ctx context.Context, flag string, defaultValue float64, flat openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return openfeature.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.mismatch(flag)}
}

// IntEvaluation implements openfeature.FeatureProvider: the kernel has no numeric flags.
func (p *Provider) IntEvaluation(ctx context.Context, flag string, defaultValue int64, flat openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return openfeature.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.mismatch(flag)}
}

// ObjectEvaluation implements openfeature.FeatureProvider: the kernel has no object flags.
func (p *Provider) ObjectEvaluation(ctx context.Context, flag string, defaultValue any, flat openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return openfeature.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: p.mismatch(flag)}
}

// mismatch answers a numeric or object evaluation: FLAG_NOT_FOUND for an unknown flag, else
// TYPE_MISMATCH.
func (p *Provider) mismatch(flag string) openfeature.ProviderResolutionDetail {
	f, found := p.eval.Flag(flag)
	if !found {
		return openfeature.ProviderResolutionDetail{ResolutionError: openfeature.NewFlagNotFoundResolutionError(fmt.Sprintf("flag %q not found", flag)), Reason: openfeature.ErrorReason}
	}
	return openfeature.ProviderResolutionDetail{ResolutionError: openfeature.NewTypeMismatchResolutionError(fmt.Sprintf("flag %q is of type %s", flag, f.Type)), Reason: openfeature.ErrorReason}
}
