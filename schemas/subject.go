package schemas

import "strings"

// SubjectPrefix starts every producer subject; "orders.events.>" is the stream filter.
const SubjectPrefix = "orders.events."

// Subject builds the subject a producer publishes to, orders.events.<source>.<order_id>.
// The source lives in the subject so NATS permissions can confine each producer class.
func Subject(src Source, orderID string) string {
	return SubjectPrefix + string(src) + "." + orderID
}

// ParseSubject splits a producer subject into its source and order id. The source
// comes from here, never from the body. A malformed subject yields Problems with
// Path "subject". The returned order id shares the subject's memory.
func ParseSubject(subject string) (src Source, orderID string, err error) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix)
	tok, id, ok2 := strings.Cut(rest, ".")
	switch {
	case !ok || !ok2:
		return "", "", Problems{{Path: "subject", Message: "must be " + SubjectPrefix + "<source>.<order_id>"}}
	case !Source(tok).Valid():
		return "", "", Problems{{Path: "subject", Message: "source token " + msgSources}}
	case !ValidOrderID(id):
		return "", "", Problems{{Path: "subject", Message: "order id token " + msgOrderID}}
	}
	return Source(tok), id, nil
}

// MilestonesPrefix starts every milestone subject:
// orders.milestones.<milestone>.<order_id>.
const MilestonesPrefix = "orders.milestones"

// WALPrefix starts every stored WAL subject: the stream's subject transform turns
// orders.events.<source>.<order_id> into orders.wal.<partition>.<source>.<order_id>.
const WALPrefix = "orders.wal"

// ProducerSubject turns a stored WAL subject back into the subject the producer
// used; any other subject is returned as it is.
func ProducerSubject(walSubject string) string {
	rest, ok := strings.CutPrefix(walSubject, WALPrefix+".")
	if !ok {
		return walSubject
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return walSubject
	}
	return SubjectPrefix + rest
}
