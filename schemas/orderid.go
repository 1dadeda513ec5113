package schemas

// OrderIDPattern is the rule every order id follows (DESIGN §2): the subject token,
// the body's order_id, the KV key and the URL segment are the same string.
// ValidOrderID is its one check; event.schema.json states the same pattern, and
// TestOrderIDRuleIsOneRule holds the three together.
const OrderIDPattern = `^[A-Za-z0-9_-]{1,64}$`

// msgOrderID is the problem every validator reports for an id that breaks the rule.
const msgOrderID = "must match " + OrderIDPattern

// ValidOrderID reports whether s follows OrderIDPattern. Callers outside this
// package (the HTTP API, the archive) use it rather than a regexp of their own.
func ValidOrderID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
