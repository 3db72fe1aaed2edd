package config

import "fmt"

// validateInvoke checks the invoke and egress sections.
func (c Config) validateInvoke(v *validator) {
	in := c.Invoke
	v.positive("invoke.timeout", in.Timeout)
	v.positive("invoke.max_timeout", in.MaxTimeout)
	v.positive("invoke.attempt_timeout", in.AttemptTimeout)
	v.positive("invoke.backoff_base", in.BackoffBase)
	v.positive("invoke.backoff_max", in.BackoffMax)
	v.positive("invoke.breaker_delay", in.BreakerDelay)
	v.positive("invoke.eject_for", in.EjectFor)
	v.positive("invoke.result_ttl", in.ResultTTL)
	if in.Timeout > in.MaxTimeout {
		v.add("invoke.timeout", fmt.Sprintf("must not exceed invoke.max_timeout (%s), got %s", in.MaxTimeout, in.Timeout))
	}
	ints := []struct {
		field    string
		got      int
		min, max int
	}{
		{"invoke.max_attempts", in.MaxAttempts, 1, 10},
		{"invoke.breaker_failures", in.BreakerFailures, 1, 1000},
		{"invoke.breaker_successes", in.BreakerSuccesses, 1, 1000},
		{"invoke.agent_in_flight", in.AgentInFlight, 1, 1 << 20},
		{"invoke.eject_after", in.EjectAfter, 1, 1000},
	}
	for _, f := range ints {
		if f.got < f.min || f.got > f.max {
			v.add(f.field, fmt.Sprintf("must be between %d and %d, got %d", f.min, f.max, f.got))
		}
	}
	if in.RetryBudget <= 0 || in.RetryBudget > 1 {
		v.add("invoke.retry_budget", fmt.Sprintf("must be above 0 and at most 1, got %g", in.RetryBudget))
	}
	if in.RetryBudgetFloor < 0 || in.RetryBudgetFloor > 1000 {
		v.add("invoke.retry_budget_floor", fmt.Sprintf("must be between 0 and 1000, got %g", in.RetryBudgetFloor))
	}
	if in.CandidatesTTL < 0 {
		v.add("invoke.candidates_ttl", "must not be negative")
	}
	v.oneOf("invoke.balancing", in.Balancing, []string{"dynamic", "static"})
	v.oneOf("egress.allow_loopback", c.Egress.AllowLoopback, []string{"auto", "true", "false"})
	if _, err := ParsePrefixList(c.Egress.Allow); err != nil {
		v.add("egress.allow", err.Error())
	}
	if _, err := ParsePrefixList(c.Egress.Deny); err != nil {
		v.add("egress.deny", err.Error())
	}
	e := c.Egress
	v.oneOf("egress.violation_action", e.ViolationAction, []string{"none", "deregister_agent"})
	if e.AllowlistReloadPeriod < 0 {
		v.add("egress.allowlist_reload_interval", "must not be negative")
	}
	if e.AllowlistFile == "" {
		if e.AllowlistKeys != "" {
			v.add("egress.allowlist_keys", "needs egress.allowlist_file")
		}
		return
	}
	if e.AllowlistKeys == "" {
		v.add("egress.allowlist_keys", "required with egress.allowlist_file: the verifier keys of its signers (nops egress keygen)")
	}
	// The signed list says where agents may be: the unsigned openings would contradict it.
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"egress.allow_loopback", e.AllowLoopback == "true"},
		{"egress.allow_private", e.AllowPrivate},
		{"egress.allow", e.Allow != ""},
		{"egress.allow_public", e.AllowPublic},
		{"egress.violation_action", e.ViolationAction != "none"},
	} {
		if f.set {
			v.add(f.name, "not allowed with egress.allowlist_file: the signed allow-list decides (docs/egress.md)")
		}
	}
}
