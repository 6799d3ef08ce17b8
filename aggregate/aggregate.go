// Package aggregate defines how the updates of one round become the next
// global model, and holds the strategies: for rankings the FRL Borda vote and
// its robust variants (filtered, median and trimmed votes), for dense weights
// FedAvg, coordinate-wise median, trimmed mean and Multi-Krum. The low-rank
// merges live in package lowrank.
//
// An Aggregator is fed the updates of one round, each already authenticated and
// checked for membership, round and model hash by the caller (node.Machine).
// Add decodes and validates the payload itself: a payload that does not decode,
// has the wrong shape, or holds invalid values is rejected with an error and
// leaves the aggregate exactly as it was.
package aggregate

import "errors"

// ErrNoUpdates is returned by Finalize when no update was added.
var ErrNoUpdates = errors.New("aggregate: no updates in this round")

// Update is one peer's contribution to a round.
type Update struct {
	// Peer names the sender (a libp2p peer ID in the daemon, "peer-0042" in the simulator).
	Peer string
	// Samples is the number of local training examples behind the update (used as a
	// weight by FedAvg-style strategies; the rank vote ignores it: one peer, one vote).
	Samples int64
	// Payload is the encoded update: a packed ranking per layer, or dense/quantized tensors.
	Payload []byte
}

// Aggregator folds the updates of one round into the next global model.
// It is not safe for concurrent use; the caller owns it.
type Aggregator interface {
	// Name is the strategy's registry name ("vote", "fedavg", ...).
	Name() string
	// Begin starts a round from the current global model (its encoded bytes) and
	// discards whatever the previous round left.
	Begin(round uint64, global []byte) error
	// Add validates one update and folds it in. On error the aggregate is unchanged.
	Add(u Update) error
	// Len is the number of updates accepted since Begin.
	Len() int
	// Finalize returns the encoded new global model. It returns ErrNoUpdates when
	// nothing was added. Begin must be called before the aggregator is used again.
	Finalize() ([]byte, error)
}
