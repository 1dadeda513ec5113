package schemas

import (
	"unicode/utf16"
	"unicode/utf8"
)

// scanner reads JSON (RFC 8259) tokens from data. It is stricter than encoding/json
// where that one silently repairs input: invalid UTF-8 and unpaired UTF-16
// surrogates are syntax errors, since they would change an id on the way through.
// Methods return false on the first syntax error, recorded in errMsg at pos.
type scanner struct {
	data   []byte
	pos    int
	errMsg string
	buf    []byte // unescaped string, reused
}

// maxDepth bounds nesting in values the event never has (they are problems anyway),
// so recursion stays shallow whatever the input.
const maxDepth = 64

func (s *scanner) fail(msg string) bool {
	s.errMsg = msg
	return false
}

func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// end reports whether only whitespace is left.
func (s *scanner) end() bool {
	s.ws()
	if s.pos != len(s.data) {
		return s.fail("unexpected data after the top-level value")
	}
	return true
}

// value skips one value of any kind, checking its syntax.
func (s *scanner) value(depth int) bool {
	if depth > maxDepth {
		return s.fail("nesting deeper than 64")
	}
	switch c := s.peek(); {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		_, ok := s.num()
		return ok
	case c == '{' || c == '[':
		s.pos++
		s.ws()
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		if s.peek() == closing {
			s.pos++
			return true
		}
		for {
			s.ws()
			if c == '{' {
				if s.peek() != '"' {
					return s.fail("expected a string key")
				}
				if _, ok := s.str(); !ok {
					return false
				}
				s.ws()
				if s.peek() != ':' {
					return s.fail("expected ':'")
				}
				s.pos++
				s.ws()
			}
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.pos++
			case closing:
				s.pos++
				return true
			default:
				return s.fail("expected ',' or '" + string(closing) + "'")
			}
		}
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
			s.pos += len(lit)
			return true
		}
	}
	if s.pos >= len(s.data) {
		return s.fail("unexpected end of input")
	}
	return s.fail("invalid character " + quoteByte(s.data[s.pos]))
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	const hex = "0123456789abcdef"
	return "0x" + string(hex[c>>4]) + string(hex[c&15])
}

// str reads a string at pos (on the opening quote) and returns its unescaped bytes,
// which alias data when it has no escapes and s.buf otherwise: copy before keeping.
func (s *scanner) str() ([]byte, bool) {
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return s.data[start : s.pos-1], true
		case c == '\\':
			s.buf = append(s.buf[:0], s.data[start:s.pos]...)
			return s.escaped()
		case c < 0x20:
			return nil, s.fail("control character in string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, n := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && n == 1 {
				return nil, s.fail("invalid UTF-8")
			}
			s.pos += n
		}
	}
	return nil, s.fail("unterminated string")
}

// escaped continues str into s.buf from the first backslash.
func (s *scanner) escaped() ([]byte, bool) {
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return s.buf, true
		case c == '\\':
			if s.pos+1 >= len(s.data) {
				return nil, s.fail("unterminated string")
			}
			e := s.data[s.pos+1]
			s.pos += 2
			switch e {
			case '"', '\\', '/':
				s.buf = append(s.buf, e)
			case 'b':
				s.buf = append(s.buf, '\b')
			case 'f':
				s.buf = append(s.buf, '\f')
			case 'n':
				s.buf = append(s.buf, '\n')
			case 'r':
				s.buf = append(s.buf, '\r')
			case 't':
				s.buf = append(s.buf, '\t')
			case 'u':
				r, ok := s.hex4()
				if !ok {
					return nil, false
				}
				if utf16.IsSurrogate(r) {
					// Only a high surrogate followed by an escaped low one is a character.
					var r2 rune = -1
					if r < 0xdc00 && s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
						s.pos += 2
						if r2, ok = s.hex4(); !ok {
							return nil, false
						}
					}
					if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
						return nil, s.fail("unpaired UTF-16 surrogate in string")
					}
				}
				s.buf = utf8.AppendRune(s.buf, r)
			default:
				return nil, s.fail("invalid escape in string")
			}
		case c < 0x20:
			return nil, s.fail("control character in string")
		case c < utf8.RuneSelf:
			s.buf = append(s.buf, c)
			s.pos++
		default:
			r, n := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && n == 1 {
				return nil, s.fail("invalid UTF-8")
			}
			s.buf = append(s.buf, s.data[s.pos:s.pos+n]...)
			s.pos += n
		}
	}
	return nil, s.fail("unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if len(s.data)-s.pos < 4 {
		return 0, s.fail("unterminated string")
	}
	var r rune
	for _, c := range s.data[s.pos : s.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, s.fail("invalid \\u escape in string")
		}
		r = r<<4 | rune(c)
	}
	s.pos += 4
	return r, true
}

// num reads a number at pos and returns its text, grammar checked.
func (s *scanner) num() ([]byte, bool) {
	start := s.pos
	if s.peek() == '-' {
		s.pos++
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return nil, s.fail("invalid number")
	}
	if s.peek() == '.' {
		s.pos++
		if s.digits() == 0 {
			return nil, s.fail("invalid number")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if s.digits() == 0 {
			return nil, s.fail("invalid number")
		}
	}
	return s.data[start:s.pos], true
}

func (s *scanner) digits() int {
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos - start
}
