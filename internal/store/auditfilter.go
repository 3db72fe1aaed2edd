package store

import "time"

// AuditFilter selects the audit records of one tree that a listing (GET /v1/audit) returns: those
// with a seq above AfterSeq matching every set field, in seq order, at most Limit of them. A
// listing pages on by passing the last seq it returned as the next AfterSeq, so a cursor is a seq
// and records appended meanwhile are never skipped or repeated.
//
// Since and Until compare with the record's time at microsecond precision, the stores' precision:
// all three are truncated to the microsecond first.
//
// The adapters answer errs.Invalid when AfterSeq is below -1 or Limit below 1; choosing a default
// and a maximum page size is the caller's business.
type AuditFilter struct {
	AfterSeq  int64     // only records with seq > AfterSeq; -1 lists from the first record
	Action    string    // only this action ("agent.create"); empty matches every action
	Principal string    // only records whose actor is this principal; empty matches every actor
	Allowed   *bool     // only allowed (true) or denied (false) decisions; nil matches both
	Since     time.Time // only records whose time is at or after Since; zero sets no bound
	Until     time.Time // only records whose time is before Until; zero sets no bound
	Limit     int       // at most this many records, at least 1
}
