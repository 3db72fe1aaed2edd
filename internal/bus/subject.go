package bus

import "strings"

// ValidSubjectPattern reports whether p is a subject pattern in NATS's wildcard syntax over the
// part of an event's subject after "<ns>.events.", that is "<tenant>.<type>": tokens separated by
// dots, '*' standing for one token and a final '>' for one or more ("ten_x.>",
// "*.nops.agent.>", "*.nops.agent.registered.v1"). At most 256 bytes.
func ValidSubjectPattern(p string) bool {
	if p == "" || len(p) > 256 {
		return false
	}
	toks := strings.Split(p, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return false
		case t == ">" && i != len(toks)-1:
			return false
		case t != "*" && t != ">" && strings.ContainsAny(t, "*> \t\r\n"):
			return false
		}
	}
	return true
}

// MatchSubject reports whether the event of tenant and type t matches pattern (see
// ValidSubjectPattern; an invalid pattern matches nothing).
func MatchSubject(pattern, tenant, t string) bool {
	if !ValidSubjectPattern(pattern) {
		return false
	}
	subj := strings.Split(tenant+"."+t, ".")
	pat := strings.Split(pattern, ".")
	for i, p := range pat {
		if p == ">" {
			return len(subj) > i
		}
		if i >= len(subj) || (p != "*" && p != subj[i]) {
			return false
		}
	}
	return len(subj) == len(pat)
}
