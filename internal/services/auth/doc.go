// Package auth owns who may do what: the bearer tokens of the ingest API (JWTs
// signed with EdDSA or RS256, verified against a local Ed25519 key or an identity
// provider's JWKS) and the NATS identities of each role (an operator, an account
// and per-role users with least-privilege permissions, issued as .creds files).
//
// The crypto is go-jose (tokens) and NATS's own nkeys and jwt libraries (NATS
// credentials); this package only decides claims, roles and permissions.
package auth
