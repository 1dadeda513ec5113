// Package dispatch owns where dashers are and which order each one serves (DESIGN
// §8.4): the location firehose, the geospatial index that answers nearby searches,
// and the leases that give a dasher to one order at a time.
//
// # Locations
//
// Dashers publish {"lat","lng","at","speed"} on core NATS to
// dashers.locations.<dasher_id> (LocationsSubject): at hundreds of thousands of
// updates per second a stored, acknowledged write per update is the wrong tool, and a
// lost update is replaced by the next one seconds later. Apps follow DeadBand: they
// stay quiet while a dasher barely moves. Every instance subscribes to the whole
// firehose (each answers searches from its own index). A message that is not a
// valid position is dropped and counted in orderflow_dasher_locations_rejected_total
// by Reason; nothing a producer sends can stop the subscriber.
//
// The latest position per dasher is also kept in KV dasher_locations (one value per
// key, key = dasher id, entries expire after an hour of silence), so an instance that
// starts rebuilds its index from it instead of waiting for every dasher to speak.
// Writes to it are throttled: at most one per dasher per StoreEvery of device time,
// published without waiting for an ack (the store is a cache of the firehose), and
// with a Nats-Msg-Id of dasher id and time slot, so N instances write one value per
// slot between them, not N.
//
// # Index
//
// Index keeps positions in geohash cells (github.com/mmcloughlin/geohash, 30-bit
// cells of about 1.2 × 0.6 km), sharded by dasher id so an update takes one shard's
// lock. A search enumerates the cells that cover the bounding box of its circle
// (wrapping across the antimeridian, all longitudes when the circle holds a pole),
// visits them nearest first by a lower bound of their distance, and keeps the
// dashers whose great-circle distance is within the radius, nearest first; with a
// limit it stops at the first cell that cannot hold anyone nearer than the worst
// kept. A search that would touch more than maxQueryCells cells scans instead. The
// newest position wins by device time (`at`), whatever the arrival order, so the
// subscriber may run several workers and the rebuild may overlap live updates.
//
// # Leases
//
// Dispatcher reserves a dasher for an order with a compare-and-set lease in KV
// dasher_leases; accept confirms it, decline and release delete it, and an order
// delivered or cancelled gives its dasher back through FollowMilestones (the status
// pipeline's milestones, so only what the resolver decided frees a dasher).
package dispatch
