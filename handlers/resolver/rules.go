package resolver

import "github.com/orderflow/orderflow/schemas"

// rank is a status's precedence when claims meet: the lifecycle order, with cancelled
// above every non-terminal status and delivered above cancelled (see the rules table
// in doc.go). rankNone means "no claim". For non-terminal statuses the rank is also the
// lifecycle stage, which is what estimator comparisons need.
type rank uint8

const (
	rankNone rank = iota
	rankCreated
	rankConfirmed
	rankPreparing
	rankReadyForPickup
	rankPickedUp
	rankEnRoute
	rankArrived
	rankCancelled
	rankDelivered
	numRanks = int(rankDelivered)
)

// rankStatus names each rank; index rankNone is the empty status.
var rankStatus = [numRanks + 1]schemas.Status{
	"",
	schemas.StatusCreated, schemas.StatusConfirmed, schemas.StatusPreparing,
	schemas.StatusReadyForPickup, schemas.StatusPickedUp, schemas.StatusEnRoute,
	schemas.StatusArrived, schemas.StatusCancelled, schemas.StatusDelivered,
}

// rankOf returns the rank of st, or rankNone for the empty or an unknown status.
// A switch, not a map, so the hot path neither hashes nor allocates.
func rankOf(st schemas.Status) rank {
	switch st {
	case schemas.StatusCreated:
		return rankCreated
	case schemas.StatusConfirmed:
		return rankConfirmed
	case schemas.StatusPreparing:
		return rankPreparing
	case schemas.StatusReadyForPickup:
		return rankReadyForPickup
	case schemas.StatusPickedUp:
		return rankPickedUp
	case schemas.StatusEnRoute:
		return rankEnRoute
	case schemas.StatusArrived:
		return rankArrived
	case schemas.StatusCancelled:
		return rankCancelled
	case schemas.StatusDelivered:
		return rankDelivered
	}
	return rankNone
}

func (r rank) status() schemas.Status { return rankStatus[r] }

// Precedes reports whether status a ranks below status b (rule 2): moving an order
// from b to a goes backwards, which only an agent override does. Unknown or empty
// statuses rank below every known one.
func Precedes(a, b schemas.Status) bool { return rankOf(a) < rankOf(b) }

// terminal reports delivered or cancelled: only an agent override leaves them.
func (r rank) terminal() bool { return r >= rankCancelled }

// Source indexes: the fixed order of schemas.Sources, so per-source state is an array.
const (
	srcPlatform = iota
	srcMerchant
	srcDriver
	srcEstimator
	srcAgent
	numSources
	srcNone = -1
)

// sourceName is the inverse of sourceIndex.
var sourceName = [numSources]schemas.Source{
	schemas.SourcePlatform, schemas.SourceMerchant, schemas.SourceDriver,
	schemas.SourceEstimator, schemas.SourceAgent,
}

// sourceIndex returns the index of src, or srcNone when it is unknown.
func sourceIndex(src schemas.Source) int {
	switch src {
	case schemas.SourcePlatform:
		return srcPlatform
	case schemas.SourceMerchant:
		return srcMerchant
	case schemas.SourceDriver:
		return srcDriver
	case schemas.SourceEstimator:
		return srcEstimator
	case schemas.SourceAgent:
		return srcAgent
	}
	return srcNone
}

// sourceNameOf returns the name of a source index, or "" for srcNone.
func sourceNameOf(i int) schemas.Source {
	if i < 0 {
		return ""
	}
	return sourceName[i]
}

// rankSet is a set of ranks as a bit mask.
type rankSet uint16

func ranks(rs ...rank) rankSet {
	var m rankSet
	for _, r := range rs {
		m |= 1 << r
	}
	return m
}

func (m rankSet) has(r rank) bool { return m&(1<<r) != 0 }

// mayClaim is DESIGN §2 "who may say what": the statuses each source may send.
var mayClaim = [numSources]rankSet{
	srcPlatform:  ranks(rankCreated, rankCancelled),
	srcMerchant:  ranks(rankConfirmed, rankPreparing, rankReadyForPickup, rankCancelled),
	srcDriver:    ranks(rankPickedUp, rankEnRoute, rankArrived, rankDelivered),
	srcEstimator: ranks(rankPreparing, rankReadyForPickup, rankPickedUp, rankEnRoute, rankArrived),
	srcAgent: ranks(rankCreated, rankConfirmed, rankPreparing, rankReadyForPickup, rankPickedUp,
		rankEnRoute, rankArrived, rankCancelled, rankDelivered),
}

// authoritative lists the sources whose claims are facts rather than predictions, in
// the order that breaks rank ties for status_source (the agent's override, when there
// is one, is the base and wins ties before all of them).
var authoritative = [...]int{srcPlatform, srcMerchant, srcDriver}

// etaPrecedence: the first source that ever sent an eta provides it. A support agent's
// manual eta beats the estimation service, which beats the producers' own guesses.
var etaPrecedence = [numSources]int{srcAgent, srcEstimator, srcDriver, srcMerchant, srcPlatform}

// idPrecedence: the first source that ever sent an entity id provides it. The agent
// corrects, the platform is the system of record, the estimator only echoes.
var idPrecedence = [numSources]int{srcAgent, srcPlatform, srcMerchant, srcDriver, srcEstimator}

// Entity id fields of State.
const (
	idCustomer = iota
	idRestaurant
	idDasher
	numIDs
)
