package fold

import (
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// Apply folds ev, stored at WAL sequence seq, into st. ok is false if the resolver
// panicked: it is fuzzed never to, but a reader that meets one must set the event
// aside (ReasonHandlerPanic) rather than wedge every order behind it. After a panic
// st may be partly changed: rebuild it without the event.
func Apply(st *resolver.State, ev *schemas.Event, seq uint64) (d resolver.Decision, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return st.Apply(ev, seq), true
}
