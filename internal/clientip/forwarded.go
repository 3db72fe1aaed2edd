package clientip

import "strings"

// forwardedFor parses the Forwarded field lines (RFC 7239 section 4) as one list and returns the
// for= value of each element in order, "" for an element without one. ok is false when the field
// is malformed anywhere:
//
//	Forwarded         = 1#forwarded-element
//	forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
//	forwarded-pair    = token "=" value
//	value             = token / quoted-string
//
// Parameter names are case-insensitive and may occur once per element. As the list rule of RFC
// 9110 section 5.6.1 asks, empty list elements are skipped and optional whitespace around the
// commas is allowed; whitespace around ';' is tolerated too, since proxies add it.
func forwardedFor(lines []string) (nodes []string, ok bool) {
	for _, line := range lines {
		p := fwdParser{s: line}
		for {
			p.skipOWS()
			if p.eof() {
				break
			}
			if p.peek() == ',' {
				p.i++
				continue
			}
			node, ok := p.element()
			if !ok {
				return nil, false
			}
			nodes = append(nodes, node)
			p.skipOWS()
			if p.eof() {
				break
			}
			if p.peek() != ',' {
				return nil, false
			}
			p.i++
		}
	}
	return nodes, true
}

type fwdParser struct {
	s string
	i int
}

func (p *fwdParser) eof() bool  { return p.i >= len(p.s) }
func (p *fwdParser) peek() byte { return p.s[p.i] }

func (p *fwdParser) skipOWS() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// element parses one forwarded-element, up to (not including) the ',' or end that closes it.
func (p *fwdParser) element() (forNode string, ok bool) {
	var seen [4]bool // for, by, host, proto; other names are extensions and not checked
	for {
		p.skipOWS()
		if p.eof() || p.peek() == ',' {
			return forNode, true
		}
		if p.peek() == ';' { // an empty pair
			p.i++
			continue
		}
		name := p.token()
		if name == "" || p.eof() || p.peek() != '=' {
			return "", false
		}
		p.i++
		var value string
		if !p.eof() && p.peek() == '"' {
			if value, ok = p.quoted(); !ok {
				return "", false
			}
		} else if value = p.token(); value == "" {
			return "", false
		}
		idx := -1
		switch strings.ToLower(name) {
		case "for":
			idx = 0
			forNode = value
		case "by":
			idx = 1
		case "host":
			idx = 2
		case "proto":
			idx = 3
		}
		if idx >= 0 {
			if seen[idx] {
				return "", false
			}
			seen[idx] = true
		}
		p.skipOWS()
		if p.eof() || p.peek() == ',' {
			return forNode, true
		}
		if p.peek() != ';' {
			return "", false
		}
		p.i++
	}
}

// token reads a run of tchar (RFC 9110 section 5.6.2), possibly empty.
func (p *fwdParser) token() string {
	start := p.i
	for !p.eof() && isTchar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string (RFC 9110 section 5.6.4) starting at its opening quote and
// returns its unescaped content.
func (p *fwdParser) quoted() (string, bool) {
	p.i++ // the opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		p.i++
		switch {
		case c == '"':
			return b.String(), true
		case c == '\\':
			if p.eof() {
				return "", false
			}
			e := p.peek()
			p.i++
			if !(e == '\t' || e >= 0x20 && e != 0x7f) {
				return "", false
			}
			b.WriteByte(e)
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		default:
			return "", false
		}
	}
	return "", false
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
