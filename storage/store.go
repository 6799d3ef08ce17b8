// Package storage persists a peer's federation state: the genesis, the global
// model of every round (by hash), every accepted update of the open round, the
// round state and the result of every closed round. node.Runtime writes what
// the protocol machine's Persist actions name before it carries out the
// actions that follow them (raft's rule: what a message promises is on disk
// before the message leaves), and rebuilds a machine from it after a restart.
//
// Open returns the Badger implementation (on disk, or in memory for tests and
// the simulator). Every write method is durable when it returns (the Badger
// store syncs it), and Commit is one transaction: a crash leaves either all of
// it or none of it.
package storage

import "errors"

// Errors; test them with errors.Is.
var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("storage: not found")
	// ErrCorrupt: a record did not decode; the error names the key.
	ErrCorrupt = errors.New("storage: corrupt record")
	// ErrConflict: a write contradicts what is stored (another genesis, an
	// update of a round that is not open, a commit of a round already committed).
	ErrConflict = errors.New("storage: conflicting write")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("storage: closed")
)

// Update is one update, as the aggregator accepted it (or as a trainer sent it).
type Update struct {
	Round     uint64 `json:"round"`
	Seq       int    `json:"seq"` // acceptance order in the round, from 0
	From      string `json:"from"`
	ModelHash []byte `json:"model_hash"`
	Payload   []byte `json:"-"` // stored under its own key, raw
	Samples   int64  `json:"samples"`
	Signature []byte `json:"signature,omitempty"`
	Hash      []byte `json:"hash"` // SHA-256 of Payload
}

// OpenRound is the aggregator's open round.
type OpenRound struct {
	Round         uint64   `json:"round"`
	ModelHash     []byte   `json:"model_hash"`      // the round's global model (stored with PutModel or Commit)
	PrevModelHash []byte   `json:"prev_model_hash"` // the model before it (nil in round 1)
	Selected      []string `json:"selected"`
	StartedMs     int64    `json:"started_ms"`
	DeadlineMs    int64    `json:"deadline_ms"`
}

// Result is a closed round.
type Result struct {
	Round         uint64         `json:"round"`
	ModelHash     []byte         `json:"model_hash"`    // the global model after the round
	UpdateHashes  [][]byte       `json:"update_hashes"` // payload hashes folded in, in acceptance order
	Advanced      bool           `json:"advanced"`
	Reason        string         `json:"reason"`
	Selected      []string       `json:"selected,omitempty"`
	AcceptedPeers []string       `json:"accepted_peers,omitempty"`
	Accepted      int            `json:"accepted"`
	Rejected      map[string]int `json:"rejected,omitempty"` // count per reason
	StartedMs     int64          `json:"started_ms"`
	ClosedMs      int64          `json:"closed_ms"`
	// BytesUp and BytesDown are the protocol bytes the aggregator received
	// and sent (per recipient) while the round was open.
	BytesUp   int64 `json:"bytes_up,omitempty"`
	BytesDown int64 `json:"bytes_down,omitempty"`
	// Eval is the model's score on the peer's test set, once evaluated.
	Eval *Eval `json:"eval,omitempty"`
}

// Eval is a global model's score on a test set.
type Eval struct {
	Accuracy float64 `json:"accuracy"`
	Loss     float64 `json:"loss"`
	Samples  int     `json:"samples"`
}

// Commit is the end of a round, written in one transaction: the round's
// result, the new global model, the next open round (nil when the federation
// is done) and the deletion of the closed round's updates.
type Commit struct {
	Result Result
	Model  []byte     // the new global model (its hash is Result.ModelHash); nil when unchanged
	Next   *OpenRound // the round opened in the same step; nil at the end
}

// TrainerRound is what a trainer persists of the round it takes part in, so
// that after a restart it resends its update (or trains again) while the round
// is open.
type TrainerRound struct {
	Round      uint64 `json:"round"`
	ModelHash  []byte `json:"model_hash"`
	Selected   bool   `json:"selected"`
	DeadlineMs int64  `json:"deadline_ms"`
	// Pending is the update sent and not yet acknowledged (nil if none).
	Pending *Update `json:"pending,omitempty"`
	// Acked is true once the aggregator acknowledged the round's update.
	Acked bool `json:"acked"`
}

// Store is a peer's persistent state. Implementations are safe for concurrent use.
type Store interface {
	// PutGenesis records the federation this store belongs to (its id and the
	// genesis file). Recording the same again is a no-op; another id is
	// ErrConflict: a store serves one federation.
	PutGenesis(id string, file []byte) error
	// Genesis returns the recorded federation, or ErrNotFound.
	Genesis() (id string, file []byte, err error)

	// PutModel stores a model under its SHA-256 and returns the hash.
	PutModel(model []byte) ([]byte, error)
	// Model returns the model with this hash, or ErrNotFound.
	Model(hash []byte) ([]byte, error)

	// AddUpdate records an accepted update of the open round (u.Round must be
	// the open round's, u.Seq the next in order: else ErrConflict).
	AddUpdate(u Update) error
	// Updates returns the updates recorded for round, in Seq order.
	Updates(round uint64) ([]Update, error)

	// Open records the open round (round 1 at the start; later rounds are
	// opened by Commit). Opening a round other than the next is ErrConflict.
	Open(r OpenRound) error
	// OpenRound returns the open round; ok is false when none is open.
	OpenRound() (r OpenRound, ok bool, err error)
	// Commit ends the open round (c.Result.Round must be it) atomically.
	Commit(c Commit) error

	// PutResult records a closed round's result without a model (a trainer
	// records the results it hears); the aggregator's come from Commit.
	PutResult(r Result) error
	// Result returns the result of a round, or ErrNotFound.
	Result(round uint64) (Result, error)
	// LastResult returns the result of the highest closed round, or ErrNotFound.
	LastResult() (Result, error)
	// PutEval attaches an evaluation to a stored result (ErrNotFound if none).
	PutEval(round uint64, e Eval) error

	// PutTrainerRound replaces the trainer's round state.
	PutTrainerRound(t TrainerRound) error
	// TrainerRound returns it; ok is false when none was recorded.
	TrainerRound() (t TrainerRound, ok bool, err error)

	// Size is the bytes the store uses on disk (0 in memory).
	Size() int64
	// Close releases the store; later calls return ErrClosed. Close is idempotent.
	Close() error
}
