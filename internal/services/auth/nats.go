package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/orderflow/orderflow/schemas"
)

// Role is a class of NATS user; each gets only the subjects and JetStream API
// calls its job needs (DESIGN §8.2).
type Role string

// The roles. A producer role is named after its source.
const (
	RolePipeline  Role = "pipeline" // the lanes, sinks, archive and read path: everything in the account
	RoleIngest    Role = "ingest"   // the HTTP ingest API: publish any source's events
	RoleReader    Role = "reader"   // read snapshots and streams, watch events live
	RoleAnalyst   Role = "analyst"  // consume milestones, read snapshots and streams
	RoleRegion    Role = "region"   // a peer region's leafnode link: sourcing and the milestone relay
	RolePlatform  Role = Role(schemas.SourcePlatform)
	RoleMerchant  Role = Role(schemas.SourceMerchant)
	RoleDriver    Role = Role(schemas.SourceDriver)
	RoleEstimator Role = Role(schemas.SourceEstimator)
	RoleAgent     Role = Role(schemas.SourceAgent)
)

// Roles lists every role in a fixed order.
var Roles = []Role{RolePipeline, RoleIngest, RolePlatform, RoleMerchant, RoleDriver, RoleEstimator, RoleAgent, RoleReader, RoleAnalyst, RoleRegion}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// InboxPrefix is where the role's clients receive replies (publish acks, API
// answers). Each role has its own, so one role cannot read another's replies: a
// client must use it (nats.CustomInboxPrefix, or `nats --inbox-prefix`).
// The pipeline may subscribe anywhere and keeps the default.
func (r Role) InboxPrefix() string {
	if r == RolePipeline {
		return nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	return "_INBOX_" + string(r)
}

// Subjects of the contract the permissions name (DESIGN §2). They are spelled here
// rather than imported so this package stays below pipelines/topology.
const (
	eventsStream     = "ORDER_EVENTS"
	ingestStream     = "ORDER_INGEST"
	milestonesStream = "ORDER_MILESTONES"
	// LocationsPrefix starts the dasher position subjects, dashers.locations.<dasher_id>.
	LocationsPrefix = "dashers.locations."
	// EstimatorBucket is the KV bucket of the estimator's checkpoints.
	EstimatorBucket = "estimator_checkpoints"
	milestonesRelay = "regions.milestones.>"
)

// regionLink is what crosses a link between two regions, both ways, besides
// replies: requests to a region's domain API ($JS.<region>.API, which the
// accepting server maps to its local API), limited to what sourcing a stream and
// region status need, on the two streams a region sources from its peer (the
// ingest log and the milestone ledger); the source consumers' deliveries ($JS.S);
// and the milestone relay to the milestones home. Producers' subjects, KV,
// streams' admin and every other stream are not on it.
func regionLink() []string {
	subjects := []string{"$JS.*.API.INFO", "$JS.S.>", milestonesRelay,
		// A milestone handover looks each milestone up in the home's ledger before
		// it deletes its own: reading it, by subject.
		"$JS.*.API.STREAM.MSG.GET." + milestonesStream, "$JS.*.API.DIRECT.GET." + milestonesStream + ".>",
	}
	for _, s := range []string{ingestStream, milestonesStream} {
		subjects = append(subjects,
			"$JS.*.API.STREAM.INFO."+s,
			"$JS.*.API.CONSUMER.CREATE."+s, "$JS.*.API.CONSUMER.CREATE."+s+".>",
			"$JS.*.API.CONSUMER.INFO."+s+".*", "$JS.*.API.CONSUMER.DELETE."+s+".*",
		)
	}
	return subjects
}

// regionReplies are the replies that cross a link, both ways: to the requests a
// region sends its peer, which it makes on a connection of their own whose
// inbox is the region role's (RegionInbox), never the pipeline's _INBOX, so the
// link does not carry the replies to a region's other clients; to the sources'
// consumer creation ($JSC.R); and the flow control of the sources ($JS.FC).
// (nats-server 2.15.2 does not track replies to requests it sent over a
// leafnode, so allow_responses cannot stand in for the way in.)
var regionReplies = []string{RoleRegion.InboxPrefix() + ".>", "$JSC.R.>", "$JS.FC.>"}

// RegionInbox is the connection option of the requests a region sends its peer
// (region status, the milestone forwarder, handover): their replies come back
// over the link, which carries this inbox and no other.
func RegionInbox() nats.Option { return nats.CustomInboxPrefix(RoleRegion.InboxPrefix()) }

// Permissions are the role's publish and subscribe allow lists; anything not
// allowed is denied.
func (r Role) Permissions() jwt.Permissions {
	var p jwt.Permissions
	inbox := r.InboxPrefix() + ".>"
	readOnly := []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.STREAM.INFO.*",
		// Reading stored messages one by one, by sequence or last-by-subject:
		// snapshots (KV get) and WAL records, without creating consumers.
		"$JS.API.STREAM.MSG.GET.*", "$JS.API.DIRECT.GET.>",
	}
	switch r {
	case RolePipeline:
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
	case RoleIngest:
		p.Pub.Allow.Add(schemas.SubjectPrefix + ">")
		p.Sub.Allow.Add(inbox)
	case RoleEstimator:
		// Publishes only its own events, and its checkpoint; reads what it
		// predicts from: the WAL message by message (no consumers: permission to
		// create one on ORDER_EVENTS would be permission to rewrite the lanes'),
		// dispatch records by KV get, and the position firehose. The checkpoint is
		// chunks and a manifest, all keys of its own bucket: writing (put,
		// compare-and-set, deleting a stale chunk) publishes on $KV.<bucket>.<key>,
		// reading is a direct get; no stream or consumer rights on it.
		p.Pub.Allow.Add(schemas.SubjectPrefix + string(r) + ".>")
		p.Pub.Allow.Add(readOnly...)
		p.Pub.Allow.Add("$KV." + EstimatorBucket + ".>")
		p.Sub.Allow.Add(inbox, LocationsPrefix+"*")
	case RolePlatform, RoleMerchant, RoleDriver, RoleAgent:
		p.Pub.Allow.Add(schemas.SubjectPrefix + string(r) + ".>")
		p.Sub.Allow.Add(inbox)
	case RoleReader:
		p.Pub.Allow.Add(readOnly...)
		p.Sub.Allow.Add(inbox, schemas.SubjectPrefix+">")
	case RoleAnalyst:
		p.Pub.Allow.Add(readOnly...)
		// Durable or ephemeral pull consumers on the milestones stream only, and their acks.
		p.Pub.Allow.Add(
			"$JS.API.CONSUMER.CREATE."+milestonesStream, "$JS.API.CONSUMER.CREATE."+milestonesStream+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+milestonesStream+".*",
			"$JS.API.CONSUMER.INFO."+milestonesStream+".*", "$JS.API.CONSUMER.MSG.NEXT."+milestonesStream+".*",
			"$JS.ACK."+milestonesStream+".>",
		)
		p.Sub.Allow.Add(inbox, "orders.milestones.>")
	case RoleRegion:
		// The peer region's server connects with it as a leafnode: publish is what it
		// may send into this region, subscribe what it may receive (nats-server reads a
		// leaf user's permissions from the leaf's side).
		p.Pub.Allow.Add(regionLink()...)
		p.Pub.Allow.Add(regionReplies...)
		p.Sub.Allow.Add(regionLink()...)
		p.Sub.Allow.Add(regionReplies...)
	}
	return p
}

// Authority is the NATS trust chain of one data directory: an operator, the
// account that holds orderflow's streams, and the system account. The seeds live
// in the auth directory (mode 0600); the account's public key also names its
// JetStream store directory, so it must stay the same across restarts.
type Authority struct {
	operator, account, system nkeys.KeyPair
}

// Seed files in the auth directory.
const (
	operatorSeedFile = "nats-operator.nk"
	accountSeedFile  = "nats-account.nk"
	systemSeedFile   = "nats-system.nk"
)

// AccountName is the JWT name of the account holding orderflow's streams.
const AccountName = "ORDERFLOW"

// LoadOrCreateAuthority reads the seeds in dir, creating those missing.
func LoadOrCreateAuthority(dir string) (*Authority, error) {
	load := func(file string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
		path := filepath.Join(dir, file)
		seed, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			kp, err := create()
			if err != nil {
				return nil, err
			}
			if seed, err = kp.Seed(); err != nil {
				return nil, err
			}
			if err := writeSecret(path, seed); err != nil {
				return nil, fmt.Errorf("nats key %s: %w", path, err)
			}
			return kp, nil
		}
		if err != nil {
			return nil, fmt.Errorf("nats key %s: %w", path, err)
		}
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			return nil, fmt.Errorf("nats key %s: %w", path, err)
		}
		return kp, nil
	}
	var a Authority
	var err error
	if a.operator, err = load(operatorSeedFile, nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.account, err = load(accountSeedFile, nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.system, err = load(systemSeedFile, nkeys.CreateAccount); err != nil {
		return nil, err
	}
	return &a, nil
}

// ExistingAuthority loads the authority in dir if its seeds exist, nil if not.
func ExistingAuthority(dir string) (*Authority, error) {
	if _, err := os.Stat(filepath.Join(dir, accountSeedFile)); err != nil {
		return nil, nil
	}
	return LoadOrCreateAuthority(dir)
}

// Accounts are the accounts the server must know from its start: the orderflow
// account, whose JetStream the server then enables as it starts rather than when
// the first client or region link binds it. Nil for a nil authority.
func (a *Authority) Accounts() []string {
	if a == nil {
		return nil
	}
	return []string{a.AccountPublicKey()}
}

// AccountPublicKey names the account (and its JetStream store directory).
func (a *Authority) AccountPublicKey() string {
	pub, _ := a.account.PublicKey()
	return pub
}

// Configure makes opts trust only this authority: every client must present a
// user JWT signed by the orderflow account (or the system account).
func (a *Authority) Configure(opts *server.Options) error {
	opPub, _ := a.operator.PublicKey()
	sysPub, _ := a.system.PublicKey()
	accPub := a.AccountPublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "orderflow"
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(a.operator)
	if err != nil {
		return err
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		return err
	}
	resolver := &server.MemAccResolver{}
	sys := jwt.NewAccountClaims(sysPub)
	sys.Name = "SYS"
	sysJWT, err := sys.Encode(a.operator)
	if err != nil {
		return err
	}
	acc := jwt.NewAccountClaims(accPub)
	acc.Name = AccountName
	acc.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	accJWT, err := acc.Encode(a.operator)
	if err != nil {
		return err
	}
	_ = resolver.Store(sysPub, sysJWT)
	_ = resolver.Store(accPub, accJWT)
	opts.TrustedOperators = []*jwt.OperatorClaims{opClaims}
	opts.AccountResolver = resolver
	opts.SystemAccount = sysPub
	return nil
}

// DasherPermissions are a driver's, plus publishing the positions of one dasher,
// on dashers.locations.<dasherID> and nowhere else: a dasher's app cannot move
// another dasher on the map.
func DasherPermissions(dasherID string) jwt.Permissions {
	p := RoleDriver.Permissions()
	p.Pub.Allow.Add(LocationsPrefix + dasherID)
	return p
}

// UserCreds signs a user of role in the orderflow account and returns it as a
// .creds file (user JWT and seed), the format `nats --creds` and
// nats.UserCredentials read. ttl 0 means the user does not expire.
func (a *Authority) UserCreds(role Role, name string, ttl time.Duration) ([]byte, error) {
	if !role.Valid() {
		return nil, fmt.Errorf("role %q: one of %v", role, Roles)
	}
	return a.signUser(role, name, ttl, role.Permissions())
}

// DasherCreds signs a driver user for one dasher (DasherPermissions); see UserCreds.
func (a *Authority) DasherCreds(dasherID, name string, ttl time.Duration) ([]byte, error) {
	if !schemas.ValidOrderID(dasherID) {
		return nil, fmt.Errorf("dasher id %q: must match [A-Za-z0-9_-]{1,64}", dasherID)
	}
	if name == "" {
		name = "dasher-" + dasherID
	}
	return a.signUser(RoleDriver, name, ttl, DasherPermissions(dasherID))
}

func (a *Authority) signUser(role Role, name string, ttl time.Duration, perms jwt.Permissions) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	if uc.Name == "" {
		uc.Name = string(role)
	}
	uc.Tags.Add("role:" + string(role))
	uc.Permissions = perms
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	ujwt, err := uc.Encode(a.account)
	if err != nil {
		return nil, err
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(ujwt, seed)
}

// ConnectOptions are what a client needs to connect with creds (the content of a
// .creds file this package issued): the credentials and its role's inbox prefix.
func ConnectOptions(creds []byte) ([]nats.Option, error) {
	ujwt, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(ujwt)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	role := RolePipeline
	for _, tag := range uc.Tags {
		if r, ok := strings.CutPrefix(tag, "role:"); ok {
			role = Role(r)
		}
	}
	if !role.Valid() {
		return nil, fmt.Errorf("creds: unknown role %q", role)
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	return []nats.Option{nats.UserJWTAndSeed(ujwt, string(seed)), nats.CustomInboxPrefix(role.InboxPrefix())}, nil
}
