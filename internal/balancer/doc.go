// Package balancer chooses which agent serves an invocation: a health score per agent, weighted
// random selection with power-of-two-choices on in-flight calls, outlier ejection with gradual
// re-admission, sticky routing by a key (weighted rendezvous hashing) and a static mode that
// honours the routing table's weights alone.
//
// It is pure in-process logic: no I/O, no goroutines, no clock of its own beyond Config.Now.
// Who may import it: the invocation routing domain (internal/invoke, internal/routing) and
// internal/kernel (wiring); it imports nothing of the project. The caller decides which agents
// are candidates (tenant, capability, routing table, zombies filtered out) and tells the balancer
// how each call it started ended.
//
// # Usage
//
//	b := balancer.New(balancer.Config{OnEject: metrics.Ejected})
//	c, ok := b.Pick(cands, tried.Has)           // or b.PickSticky(key, cands, tried.Has)
//	if !ok { return errs.New(errs.Unavailable, "no agent available") }
//	at := b.Begin(c)
//	resp, err := call(ctx, c)
//	at.End(balancer.Outcome{Latency: elapsed, Failure: err != nil, Ignore: ctx.Err() != nil})
//
// # Score
//
// Every eligible candidate gets an effective weight = Candidate.Weight × score, where the score
// is the product of five factors, each in (0,1]:
//
//	freshness = 1 when the heartbeat is on time, StaleFactor when Candidate.Stale
//	latency   = L_best / L_own, L = the kernel's EWMA of this agent's call latency, L_best the
//	            lowest L among this Pick's eligible candidates that have samples; an agent without
//	            samples counts as the best (1): optimistic, so new agents get explored
//	success   = 1 − max(E_own, reported error_rate), E = the kernel's EWMA of failures (0 or 1)
//	load      = MinFactor when the heartbeat reported free_capacity == 0, else 1
//	ramp      = 0 while ejected; 0.1 + 0.9·t/RampUp during the RampUp after an ejection ends;
//	            else 1
//
// Every factor but ramp is floored at MinFactor, so a slow or failing agent keeps receiving a
// trickle of calls (probes) and its averages can recover; ejection, not the score, is what stops
// traffic to a broken agent. The reported in_flight and p95_ms of a heartbeat are not scored: the
// kernel's own observations are fresher and comparable between agents, where a self-report is a
// heartbeat old and measured differently by each SDK.
//
// The averages decay by elapsed time, not per sample: each sample enters a sum and a weight that
// both halve every HalfLife (default 10 s), and the average is their ratio. A burst of samples
// therefore counts fully, a fast agent does not forget faster than a slow one, and after a quiet
// period the first new samples outweigh the old ones. A failed call's latency sample is
// max(its latency, the current average): a timeout raises the average, but a fast failure
// (connection refused) does not make a broken agent look fast.
//
// With 5/20/80 ms agents the latency factors are 1, 0.25 and 0.0625, so the weighted draw alone
// gives the 80 ms agent about 5% of the calls instead of a third; power-of-two-choices moves
// more away from it under load, because it holds its calls 16 times longer.
//
// # Selection
//
// Dynamic (default): draw a first candidate with probability ∝ effective weight, then a second
// one from the others the same way. Take the first when it has no call in flight; otherwise take
// the second when (in-flight₂+1)/weight₂ < (in-flight₁+1)/weight₁, else the first (in-flight is
// the kernel's own count of calls begun and not ended). With equal effective weights this is
// exactly "fewer in-flight wins, a tie goes to the first drawn", so with sequential calls the
// shares equal the weights in expectation. Dividing by the weight keeps unequal weights honest
// under load: a 5% canary is usually idle while the stable agent is busy, and a plain in-flight
// comparison would give it about half of the traffic.
//
// Static (Config.Static): one draw with probability ∝ Candidate.Weight × ramp; no score, no
// power-of-two-choices. Ejection and re-admission still apply. It is the baseline of the
// dynamic-vs-static benchmark and the mode for exact traffic splits.
//
// A candidate is never returned when skip says so, when it is ejected (as Pick reads its state:
// an End racing with the Pick may eject it a moment later), or when its Weight is not a positive
// finite number. One eligible candidate is returned without a draw; none gives false.
//
// # Ejection
//
// EjectAfter consecutive failures (default 5) eject an agent for EjectBase (default 10 s); each
// re-ejection doubles the time, up to EjectMax (default 5 m). When the ejection ends the agent is
// re-admitted gradually: its ramp factor grows linearly from 0.1 to 1 over RampUp (default 30 s).
// A single failure during the ramp ejects it again (doubled); a complete ramp without failure
// resets the doubling. Only calls begun after the last ejection ended count towards an ejection:
// the calls that were already in flight when an agent was ejected fail together, and must not
// extend or repeat that ejection. Any success resets the consecutive-failure count.
//
// OnEject is called when an agent is ejected, OnReadmit when the first Pick, PickSticky or End
// after the end of its ejection notices it. Both run synchronously on the caller's goroutine, outside
// the balancer's locks; they must be quick (a metric, an event queued).
//
// There is no "panic mode": when every candidate is ejected, Pick returns false and the caller
// answers with its fallback or an error, as it would with an open circuit breaker.
//
// # Sticky routing
//
// PickSticky uses weighted rendezvous (highest random weight) hashing: each eligible candidate
// gets Weight·ramp / −ln(u), u a uniform value in (0,1) hashed from (key, agent ID), and the
// highest wins. The same key goes to the same agent while that agent stays eligible, the keys
// are spread in proportion to the weights, and removing (or ejecting, or skipping) an agent moves
// only its own keys. The score is deliberately not used, since it changes from call to call;
// the ramp factor is, so a re-admitted agent gets its keys back gradually. The hash (FNV-1a
// with a splitmix64 finaliser) is fixed, so all replicas and versions agree; changing it moves
// every key.
//
// # Concurrency
//
// All methods are safe for concurrent use. Agent state lives in a map guarded by a RWMutex (read
// lock on every lookup, write lock only to add, forget or sweep agents); each agent has atomics
// that Pick reads without a lock (in-flight, averages, ejection time) and a mutex taken by End
// to update them. No lock is held while calling hooks, Config.Now or Config.Rand, and the map
// lock is never taken while an agent's mutex is held.
//
// State of agents idle (no Begin or End) for 10 minutes is dropped lazily, except while they have
// calls in flight or are ejected or ramping; Forget drops it at once. An Attempt begun before
// its agent was forgotten still ends correctly, on the forgotten state.
//
// # Testing
//
// Config.Now and Config.Rand make every decision reproducible: tests inject a fake clock and a
// seeded source. A virtual-time simulation of a 5/20/80 ms fleet (sim_test.go) checks the
// dynamic mode's p95 gain over the static one without real time.
package balancer
