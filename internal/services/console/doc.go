// Package console is the support console of DESIGN §8.3, served at /console: a few
// server-rendered pages where a support agent signs in with an agent token, finds
// an order (by id, or a customer's, restaurant's or dasher's orders when ClickHouse
// is configured), reads its whole story and corrects its status.
//
// It owns presentation only. What an event did to an order is the resolver's
// decision (read through the orders read path); a correction is an ordinary agent
// event posted through the ingest handler, so it meets the same token check, rate
// limit and validation as any other; the preview of a correction folds the event
// into a copy of the order with the resolver itself; which milestone messages a
// change owes is the outbox's rule. The console adds words, not rules.
//
// # Sessions
//
// The session cookie holds the agent token itself (HttpOnly, SameSite=Strict,
// Secure under TLS, expiring with the token), so any instance of serve can answer
// any request and a session ends when the token does; there is no session store to
// lose or share. Every form carries a CSRF token: before sign-in a random value
// also set in a cookie (double submit), after it a hash of the session token, which
// a page of another origin can neither read nor compute.
//
// # Live updates
//
// The order page subscribes to the API's SSE status watch through a route of its
// own (EventSource cannot send a bearer token) and, on a status change newer than
// what it shows, fetches the live part of the page again, server-rendered. The
// version vector a correction sends as observed is the one in that part, so it is
// always the one on screen.
package console
