package node

import (
	"fmt"

	"github.com/fedrank/fedrank/aggregate"
)

// PeerID names a peer: a libp2p peer ID in the daemon, "peer-0042" in the simulator.
type PeerID = string

// Role is what a machine does in its federation.
type Role int

// Roles. The zero Role is invalid so that a forgotten setting is caught by Validate.
const (
	// RoleTrainer trains locally when selected and sends its update to the aggregator.
	RoleTrainer Role = iota + 1
	// RoleAggregator runs the rounds: selection, update checks, aggregation, results.
	RoleAggregator
)

func (r Role) String() string {
	switch r {
	case RoleTrainer:
		return "trainer"
	case RoleAggregator:
		return "aggregator"
	default:
		return fmt.Sprintf("Role(%d)", int(r))
	}
}

// SelectFunc picks the k trainers of a round from members (sorted, distinct). It
// must be deterministic in its arguments and return k distinct members.
type SelectFunc func(round uint64, members []PeerID, k int, seed uint64) []PeerID

// Config is one machine's settings. Fields marked "aggregator" are only read (and
// validated) for RoleAggregator; a federation's peers normally share every other field.
type Config struct {
	// ID is this machine's peer ID.
	ID PeerID
	// Federation names the federation; messages of other federations are dropped.
	Federation string
	// Role is RoleTrainer or RoleAggregator.
	Role Role
	// Aggregator is the peer that coordinates the rounds. Trainers only obey it.
	Aggregator PeerID
	// Members are the federation's trainers (the membership): only they are
	// selected and only their updates are accepted. Order does not matter.
	Members []PeerID

	// PerRound is the number of trainers selected per round (aggregator).
	PerRound int
	// Quorum is the number of accepted updates that closes a round before its
	// deadline, 1..PerRound (aggregator).
	Quorum int
	// MinUpdates is the fewest accepted updates for which a round that reaches its
	// deadline still produces a new model, 1..Quorum. Below it the round closes with
	// the model unchanged (RoundClosed.Advanced is false and Reason says why)
	// (aggregator).
	MinUpdates int
	// RoundTimeoutMs is the time from a round's start to its deadline.
	RoundTimeoutMs int64
	// RetryMs is the first delay before a trainer resends an unanswered
	// ModelRequest or Update, and before the aggregator resends the RoundStart to
	// the selected trainers it has not heard from; each delay doubles after each
	// resend, and resends stop at the round's deadline. 0 means RoundTimeoutMs/10.
	RetryMs int64
	// Rounds is the number of rounds to run; 0 runs forever (aggregator). A trainer
	// with Rounds > 0 reports Done when it sees the last round's result.
	Rounds uint64
	// Seed seeds trainer selection: the same seed gives the same selections.
	Seed uint64
	// Select overrides trainer selection (e.g. an experiment that must never
	// select a malicious majority). nil means SelectUniform (aggregator).
	Select SelectFunc

	// MaxUpdateBytes bounds an update's payload (aggregator).
	MaxUpdateBytes int
	// MaxModelBytes bounds the whole of a model received in ModelResponses
	// (trainer): a larger total_size is refused before any more is asked for.
	MaxModelBytes int
	// ChunkBytes is the most model bytes the aggregator puts in one
	// ModelResponse; a larger model travels in chunks that the trainer pulls
	// one after the other (resuming where it stopped after a loss). 0 sends
	// a model whole (aggregator).
	ChunkBytes int
	// SilenceMs: a trainer that has heard nothing from the aggregator for this
	// long reports it with a Silent action (and in Status), once per silence.
	// 0 disables the check (trainer).
	SilenceMs int64

	// Sign signs an update (trainer): it is given SignedUpdate(...) and
	// returns the signature carried in Update.signature. nil sends unsigned
	// updates.
	Sign func(msg []byte) ([]byte, error)
	// Verify checks an update's signature against its sender (aggregator):
	// msg is SignedUpdate(...). nil accepts unsigned updates; when set, an
	// update whose signature does not verify is rejected (RejectBadSignature).
	Verify func(from PeerID, msg, sig []byte) error

	// NewAggregator builds the aggregation strategy, once, in New (aggregator).
	NewAggregator func() (aggregate.Aggregator, error)
	// InitialModel is the encoded global model of round 1 (aggregator). A trainer
	// may be given it too (for instance when every peer derives it from a shared
	// seed); it then skips the download in round 1.
	InitialModel []byte
}

// ConfigError names the Config field that is wrong.
type ConfigError struct {
	Field string // Config field name, e.g. "PerRound"
	Msg   string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("node: invalid Config.%s: %s", e.Field, e.Msg)
}

func cfgErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first invalid field as a *ConfigError.
func (c Config) Validate() error {
	if c.ID == "" {
		return cfgErr("ID", "empty")
	}
	if c.Federation == "" {
		return cfgErr("Federation", "empty")
	}
	if c.Aggregator == "" {
		return cfgErr("Aggregator", "empty")
	}
	if len(c.Members) == 0 {
		return cfgErr("Members", "no members")
	}
	seen := make(map[PeerID]bool, len(c.Members))
	for i, p := range c.Members {
		switch {
		case p == "":
			return cfgErr("Members", "member %d is empty", i)
		case seen[p]:
			return cfgErr("Members", "%q listed twice", p)
		case p == c.Aggregator:
			return cfgErr("Members", "%q is the Aggregator; the aggregator does not train", p)
		}
		seen[p] = true
	}
	if c.RoundTimeoutMs <= 0 {
		return cfgErr("RoundTimeoutMs", "%d, must be > 0", c.RoundTimeoutMs)
	}
	if c.ChunkBytes < 0 {
		return cfgErr("ChunkBytes", "%d, must be >= 0 (0 = whole models)", c.ChunkBytes)
	}
	if c.SilenceMs < 0 {
		return cfgErr("SilenceMs", "%d, must be >= 0 (0 = no silence check)", c.SilenceMs)
	}
	if c.RetryMs < 0 {
		return cfgErr("RetryMs", "%d, must be >= 0 (0 = RoundTimeoutMs/10)", c.RetryMs)
	}
	switch c.Role {
	case RoleTrainer:
		if !seen[c.ID] {
			return cfgErr("ID", "trainer %q is not in Members", c.ID)
		}
		if c.MaxModelBytes <= 0 {
			return cfgErr("MaxModelBytes", "%d, must be > 0", c.MaxModelBytes)
		}
	case RoleAggregator:
		if c.ID != c.Aggregator {
			return cfgErr("ID", "aggregator role but ID %q != Aggregator %q", c.ID, c.Aggregator)
		}
		if c.PerRound < 1 || c.PerRound > len(c.Members) {
			return cfgErr("PerRound", "%d, must be in 1..len(Members) = 1..%d", c.PerRound, len(c.Members))
		}
		if c.Quorum < 1 || c.Quorum > c.PerRound {
			return cfgErr("Quorum", "%d, must be in 1..PerRound = 1..%d", c.Quorum, c.PerRound)
		}
		if c.MinUpdates < 1 || c.MinUpdates > c.Quorum {
			return cfgErr("MinUpdates", "%d, must be in 1..Quorum = 1..%d", c.MinUpdates, c.Quorum)
		}
		if c.MaxUpdateBytes <= 0 {
			return cfgErr("MaxUpdateBytes", "%d, must be > 0", c.MaxUpdateBytes)
		}
		if c.NewAggregator == nil {
			return cfgErr("NewAggregator", "nil; the aggregator role needs a strategy")
		}
		if len(c.InitialModel) == 0 {
			return cfgErr("InitialModel", "empty; the aggregator role needs the model of round 1")
		}
	default:
		return cfgErr("Role", "%v, must be RoleTrainer or RoleAggregator", c.Role)
	}
	return nil
}

func (c Config) retryMs() int64 {
	if c.RetryMs > 0 {
		return c.RetryMs
	}
	return max(c.RoundTimeoutMs/10, 1)
}
