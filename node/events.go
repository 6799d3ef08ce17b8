package node

import (
	"fmt"

	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/wire"
)

// Event is an input of Machine.Step: Start, Recv, TimerFired or TrainDone.
type Event interface{ isEvent() }

// Start starts the machine. The aggregator opens round 1; a trainer waits.
type Start struct{}

// Recv is a message received from a peer. From is authenticated by the
// transport; Msg was decoded with wire.Unmarshal. The machine does not modify Msg.
type Recv struct {
	From PeerID
	Msg  *wire.Envelope
}

// TimerFired reports that a timer set with SetTimer is due. Firing a timer that
// was cancelled or replaced is harmless: the machine ignores timers that no
// longer apply.
type TimerFired struct{ ID TimerID }

// TrainDone reports the end of the local training started by a Train action.
type TrainDone struct {
	Round     uint64 // Train.Round
	ModelHash []byte // Train.ModelHash
	Payload   []byte // the encoded update
	Samples   int64  // local training examples behind the update
	Err       error  // training failed; nothing is sent
}

func (Start) isEvent()      {}
func (Recv) isEvent()       {}
func (TimerFired) isEvent() {}
func (TrainDone) isEvent()  {}

// Action is an output of Machine.Step, to be carried out by the driver in order:
// Persist, Send, Broadcast, SetTimer, CancelTimer, Train, RoundClosed, Silent
// or Done.
//
// Messages and byte slices in actions are shared with the machine and must not
// be modified by the driver.
type Action interface{ isAction() }

// Persist names state that must be durable before the driver carries out any
// action that follows it in the same batch: raft's rule, that what a message
// promises is on disk before the message leaves. Exactly one field is set. A
// driver without a store (the simulator's peers keep their state in memory)
// may skip it; a driver with one must stop, not go on, if the write fails.
// Restore rebuilds a machine from what was persisted.
type Persist struct {
	// Open: the aggregator opened round 1 (later rounds open in a Commit).
	Open *storage.OpenRound
	// Update: the aggregator accepted an update; written before its ack and
	// before it can close the round.
	Update *storage.Update
	// Commit: the aggregator closed a round: its result, the new global model
	// and the next open round, in one transaction.
	Commit *storage.Commit
	// Trainer: a trainer's state in its round (selected, its unacknowledged
	// update before it is sent, acknowledged).
	Trainer *storage.TrainerRound
	// Result: a trainer heard a round's result.
	Result *storage.Result
	// Model: a global model a trainer received and verified (by its hash).
	Model []byte
}

// Send delivers a message to one peer.
type Send struct {
	To  PeerID
	Msg *wire.Envelope
}

// Broadcast delivers a message to every member of the federation (gossipsub in
// the daemon).
type Broadcast struct{ Msg *wire.Envelope }

// SetTimer asks for TimerFired{ID} at time AtMs; it replaces any pending timer
// with the same ID.
type SetTimer struct {
	ID   TimerID
	AtMs int64
}

// CancelTimer cancels the pending timer with this ID, if any.
type CancelTimer struct{ ID TimerID }

// Train asks the driver to run local training from Model (whose SHA-256 is
// ModelHash) for Round, outside the machine, and to report back with TrainDone.
type Train struct {
	Round     uint64
	ModelHash []byte
	Model     []byte
}

// RoundClosed tells observers that the aggregator closed a round. Model is the
// global model after the round (the simulator evaluates it).
type RoundClosed struct {
	Round     uint64
	ModelHash []byte
	Model     []byte
	// Advanced is false when the round closed with the model unchanged.
	Advanced bool
	// Reason says how the round closed: "quorum", "deadline", or why the model did
	// not change.
	Reason        string
	Selected      int
	Accepted      int
	SelectedPeers []PeerID
	// AcceptedPeers are the senders of the accepted updates, in acceptance order.
	AcceptedPeers []PeerID
	// Rejected lists every update rejected while the round was open.
	Rejected  []Rejection
	StartedMs int64
	ClosedMs  int64
}

// Silent reports that a trainer has heard nothing from the aggregator since
// SinceMs (Config.SilenceMs ago). It is reported once per silence; Status
// shows it until the aggregator is heard again.
type Silent struct{ SinceMs int64 }

// Done reports that the machine has nothing more to do: the aggregator ran
// Config.Rounds rounds, a trainer saw the last round's result, or (Err != nil)
// the aggregator hit an error it cannot recover from (its aggregation strategy
// failed); the driver should stop the run and report Err.
type Done struct{ Err error }

func (Persist) isAction()     {}
func (Silent) isAction()      {}
func (Send) isAction()        {}
func (Broadcast) isAction()   {}
func (SetTimer) isAction()    {}
func (CancelTimer) isAction() {}
func (Train) isAction()       {}
func (RoundClosed) isAction() {}
func (Done) isAction()        {}

// TimerKind says what a timer is for.
type TimerKind int

// Timer kinds.
const (
	// TimerDeadline closes the aggregator's round.
	TimerDeadline TimerKind = iota + 1
	// TimerModelRetry resends a trainer's unanswered ModelRequest.
	TimerModelRetry
	// TimerUpdateRetry resends a trainer's unacknowledged Update.
	TimerUpdateRetry
	// TimerAnnounce resends the aggregator's RoundStart to the selected trainers
	// it has not heard from (the broadcast may not have reached them).
	TimerAnnounce
	// TimerSilence fires when a trainer has heard nothing from the aggregator
	// for Config.SilenceMs (its Round is 0).
	TimerSilence
	// TimerFinal broadcasts the last round's result again (aggregator).
	TimerFinal
)

func (k TimerKind) String() string {
	switch k {
	case TimerDeadline:
		return "deadline"
	case TimerModelRetry:
		return "model-retry"
	case TimerUpdateRetry:
		return "update-retry"
	case TimerAnnounce:
		return "announce"
	case TimerSilence:
		return "silence"
	case TimerFinal:
		return "final"
	default:
		return fmt.Sprintf("TimerKind(%d)", int(k))
	}
}

// TimerID identifies a timer of one machine. It is comparable (usable as a map key).
type TimerID struct {
	Kind  TimerKind
	Round uint64
}

func (id TimerID) String() string { return fmt.Sprintf("%s/%d", id.Kind, id.Round) }

// Reason is why the aggregator rejected an update. It travels in UpdateAck.reason.
type Reason string

// Rejection reasons, in the order the aggregator checks them.
const (
	RejectWrongFederation Reason = "wrong-federation" // Envelope.federation is not ours
	RejectNotMember       Reason = "not-member"       // the sender is not a member
	RejectWrongRound      Reason = "wrong-round"      // stale or future round, or no round open
	RejectNotSelected     Reason = "not-selected"     // the sender was not selected this round
	RejectWrongModel      Reason = "wrong-model"      // trained from another model than the round's
	RejectOversized       Reason = "oversized"        // payload longer than Config.MaxUpdateBytes
	RejectBadSamples      Reason = "bad-samples"      // samples <= 0
	RejectBadSignature    Reason = "bad-signature"    // the signature does not verify against the sender's key
	RejectDuplicate       Reason = "duplicate"        // a second, different update of the same peer and round
	RejectInvalidPayload  Reason = "invalid-payload"  // the aggregation strategy refused the payload
)

// Rejection records one rejected update.
type Rejection struct {
	From   PeerID
	Round  uint64 // the round the update claimed
	Reason Reason
	Detail string // more context (the strategy's error for RejectInvalidPayload)
}
