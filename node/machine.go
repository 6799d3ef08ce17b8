package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/fedrank/fedrank/wire"
)

// Hash returns the SHA-256 of b: how models and update payloads are named.
func Hash(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// Machine is one peer's protocol state. It is not safe for concurrent use: the
// driver calls Step from one goroutine.
type Machine struct {
	cfg     Config
	members []PeerID        // sorted (aggregator only)
	member  map[PeerID]bool // (aggregator only)
	retryMs int64
	done    bool
	c       Counters

	agg *aggregatorState // RoleAggregator
	tr  *trainerState    // RoleTrainer
}

// Counters count what a machine dropped or retried since New, for tests and
// metrics. Rejected updates are reported per round in RoundClosed instead.
type Counters struct {
	// Ignored: messages dropped for their federation, sender or kind.
	Ignored int
	// Stale: messages and training results for a round that is over (or not begun).
	Stale int
	// BadModels: ModelResponses whose bytes did not match their hash or size bound.
	BadModels int
	// UnknownModels: ModelRequests for a model the aggregator does not hold.
	UnknownModels int
	// TrainErrors: TrainDone events with an error.
	TrainErrors int
	// Resends: ModelRequests and Updates sent again by a trainer; for the
	// aggregator, identical updates acknowledged again.
	Resends int
	// Acked, Nacked: a trainer's updates accepted and rejected by the aggregator.
	Acked, Nacked int
}

// Status is a snapshot of a machine, for tests and monitoring.
type Status struct {
	ID    PeerID
	Role  Role
	Round uint64 // the open round (aggregator) or the last announced round (trainer)
	// ModelHash is the global model held: the open round's (aggregator), or the
	// one received and verified for the last round announced (trainer; nil if none:
	// a trainer drops a model once a round announces another).
	ModelHash []byte
	Done      bool
	Selected  []PeerID // aggregator: selected in the open round
	Accepted  int      // aggregator: updates accepted in the open round
	Rejected  int      // aggregator: updates rejected in the open round
	// SilentSinceMs is when a trainer last heard the aggregator, if it has
	// been silent for Config.SilenceMs or more (0 otherwise).
	SilentSinceMs int64
	Counters      Counters
}

// New validates cfg and returns a machine. For the aggregator role it builds
// the aggregation strategy with cfg.NewAggregator.
func New(cfg Config) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, retryMs: cfg.retryMs()}
	switch cfg.Role {
	case RoleAggregator:
		// Only the aggregator consults the membership after validation: a trainer
		// keeps no copy (a simulation runs a thousand of them).
		m.members = slices.Clone(cfg.Members)
		slices.Sort(m.members)
		m.cfg.Members = m.members
		m.member = make(map[PeerID]bool, len(m.members))
		for _, p := range m.members {
			m.member[p] = true
		}
		a, err := cfg.NewAggregator()
		if err != nil {
			return nil, &ConfigError{Field: "NewAggregator", Msg: err.Error()}
		}
		m.agg = &aggregatorState{agg: a, model: cfg.InitialModel, hash: Hash(cfg.InitialModel)}
	case RoleTrainer:
		m.tr = &trainerState{}
		if len(cfg.InitialModel) > 0 {
			m.tr.model, m.tr.modelHash = cfg.InitialModel, Hash(cfg.InitialModel)
		}
	}
	return m, nil
}

// Config returns the machine's configuration (an aggregator's Members sorted).
func (m *Machine) Config() Config { return m.cfg }

// Status returns a snapshot of the machine.
func (m *Machine) Status() Status {
	s := Status{ID: m.cfg.ID, Role: m.cfg.Role, Done: m.done, Counters: m.c}
	if a := m.agg; a != nil {
		s.Round, s.ModelHash = a.round, slices.Clone(a.hash)
		s.Selected = slices.Clone(a.selected)
		s.Accepted, s.Rejected = len(a.acceptedPeers), len(a.rejected)
	}
	if t := m.tr; t != nil {
		s.Round, s.ModelHash = t.round, slices.Clone(t.modelHash)
		if t.silentMs > 0 {
			s.SilentSinceMs = t.heardMs
		}
	}
	return s
}

// Step feeds one event to the machine at time nowMs and returns the actions the
// driver must carry out, in order. nowMs must not decrease between calls.
func (m *Machine) Step(nowMs int64, ev Event) []Action {
	if m.agg != nil {
		return m.stepAggregator(nowMs, ev)
	}
	return m.stepTrainer(nowMs, ev)
}

// msg wraps a message body in an envelope of the machine's federation.
func (m *Machine) msg(body any) *wire.Envelope {
	e := &wire.Envelope{Federation: m.cfg.Federation}
	switch b := body.(type) {
	case *wire.RoundStart:
		e.Body = &wire.Envelope_RoundStart{RoundStart: b}
	case *wire.ModelRequest:
		e.Body = &wire.Envelope_ModelRequest{ModelRequest: b}
	case *wire.ModelResponse:
		e.Body = &wire.Envelope_ModelResponse{ModelResponse: b}
	case *wire.Update:
		e.Body = &wire.Envelope_Update{Update: b}
	case *wire.UpdateAck:
		e.Body = &wire.Envelope_UpdateAck{UpdateAck: b}
	case *wire.RoundResult:
		e.Body = &wire.Envelope_RoundResult{RoundResult: b}
	default:
		panic("node: msg: not a message body") // programming error
	}
	return e
}

func equalHash(a, b []byte) bool { return len(a) > 0 && bytes.Equal(a, b) }

// SignedUpdate is what a trainer signs for an update and the aggregator
// verifies: a domain tag, then the federation id, the round, the hash of the
// model the update was trained from and the hash of its payload, each
// length-prefixed, so that no two different tuples give the same bytes. A
// signature binds the update to its federation and round: it cannot be
// replayed elsewhere.
func SignedUpdate(federation string, round uint64, modelHash, payloadHash []byte) []byte {
	b := make([]byte, 0, 32+len(federation)+len(modelHash)+len(payloadHash))
	b = append(b, "fedrank/update/v1\x00"...)
	b = binary.AppendUvarint(b, uint64(len(federation)))
	b = append(b, federation...)
	b = binary.BigEndian.AppendUint64(b, round)
	b = binary.AppendUvarint(b, uint64(len(modelHash)))
	b = append(b, modelHash...)
	b = binary.AppendUvarint(b, uint64(len(payloadHash)))
	return append(b, payloadHash...)
}
