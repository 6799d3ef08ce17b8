package node

import (
	"fmt"
	"slices"

	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/wire"
)

// Recovered is what a peer's store held when it restarted: the input of
// Restore. The zero value is a peer that had persisted nothing.
type Recovered struct {
	// Open is the aggregator's open round (nil: none open, because the
	// federation had not started or is done).
	Open *storage.OpenRound
	// Last is the result of the last round the aggregator committed.
	Last *storage.Result
	// Model is the aggregator's current global model: Open.ModelHash's, or
	// Last.ModelHash's when no round is open. PrevModel is
	// Open.PrevModelHash's (nil in round 1).
	Model, PrevModel []byte
	// Updates are the open round's accepted updates, in acceptance order.
	Updates []storage.Update

	// Trainer is a trainer's round state, and TrainerModel the model of
	// Trainer.ModelHash if the trainer holds it. A trainer's Last is the
	// last result it recorded.
	Trainer      *storage.TrainerRound
	TrainerModel []byte
}

// Restore rebuilds a machine from what its store held. An aggregator takes
// up its open round: it folds the stored updates in again, in their order
// (the aggregate is a function of the updates and their order, so the
// round's result is the one it would have been without the crash); on Start
// it closes the round at once if those updates make the quorum or the
// deadline has passed, and otherwise announces it again with its original
// deadline. A trainer takes up the round it was selected for: on Start it
// resends its unacknowledged update, or trains again if it had none, as long
// as the round's deadline has not passed. With nothing recovered, Restore is
// New.
func Restore(cfg Config, rec Recovered) (*Machine, error) {
	m, err := New(cfg)
	if err != nil {
		return nil, err
	}
	switch {
	case m.agg != nil:
		err = m.restoreAggregator(rec)
	default:
		m.restoreTrainer(rec)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Machine) restoreAggregator(rec Recovered) error {
	a := m.agg
	hashOK := func(model, hash []byte, what string) error {
		if !equalHash(Hash(model), hash) {
			return fmt.Errorf("node: restore: the %s model does not match its hash %x", what, hash)
		}
		return nil
	}
	if rec.Open == nil {
		if rec.Last == nil {
			return nil // a fresh federation
		}
		if m.cfg.Rounds == 0 || rec.Last.Round < m.cfg.Rounds {
			return fmt.Errorf("node: restore: round %d is committed but no round is open", rec.Last.Round)
		}
		if err := hashOK(rec.Model, rec.Last.ModelHash, "final"); err != nil {
			return err
		}
		a.model, a.hash = rec.Model, rec.Last.ModelHash
		a.round, m.done = rec.Last.Round, true
		a.result = resultMsg(rec.Last)
		return nil
	}
	o := rec.Open
	if err := hashOK(rec.Model, o.ModelHash, "open round's"); err != nil {
		return err
	}
	a.model, a.hash = rec.Model, slices.Clone(o.ModelHash)
	if len(o.PrevModelHash) > 0 {
		if err := hashOK(rec.PrevModel, o.PrevModelHash, "previous"); err != nil {
			return err
		}
		a.prevModel, a.prevHash = rec.PrevModel, slices.Clone(o.PrevModelHash)
	}
	if l := rec.Last; l != nil && l.Round+1 == o.Round {
		a.result = resultMsg(l)
	}
	if l := rec.Last; l != nil && l.Round+1 == o.Round && len(l.AcceptedPeers) == len(l.UpdateHashes) {
		// Resends of the previous round's updates are acknowledged again.
		a.prevAccepted = make(map[PeerID][]byte, len(l.AcceptedPeers))
		for i, p := range l.AcceptedPeers {
			a.prevAccepted[p] = l.UpdateHashes[i]
		}
	}
	if err := a.agg.Begin(o.Round, a.model); err != nil {
		return fmt.Errorf("node: restore round %d: aggregator %s: Begin: %w", o.Round, a.agg.Name(), err)
	}
	a.setRound(o.Round, slices.Clone(o.Selected), o.StartedMs, o.DeadlineMs)
	for i := range rec.Updates {
		u := &rec.Updates[i]
		switch {
		case u.Round != o.Round || u.Seq != i:
			return fmt.Errorf("node: restore round %d: stored update %d is round %d seq %d", o.Round, i, u.Round, u.Seq)
		case !a.isSelected[u.From] || a.acceptedHash[u.From] != nil:
			return fmt.Errorf("node: restore round %d: stored update %d from %q, not a selected peer without an update", o.Round, i, u.From)
		}
		if err := m.accept(u); err != nil {
			return fmt.Errorf("node: restore round %d: stored update %d from %q: %w", o.Round, i, u.From, err)
		}
		a.heard[u.From] = true
	}
	return nil
}

// resultMsg is the RoundResult announcing a stored result.
func resultMsg(r *storage.Result) *wire.RoundResult {
	rejected := 0
	for _, n := range r.Rejected {
		rejected += n
	}
	return &wire.RoundResult{
		Round: r.Round, ModelHash: r.ModelHash, UpdateHashes: r.UpdateHashes,
		Accepted: uint32(r.Accepted), Rejected: uint32(rejected),
	}
}

func (m *Machine) restoreTrainer(rec Recovered) {
	if rec.Last != nil {
		m.tr.lastResult = rec.Last.Round
	}
	if rec.Trainer == nil {
		return
	}
	t, r := m.tr, rec.Trainer
	t.round, t.roundHash, t.deadlineMs = r.Round, slices.Clone(r.ModelHash), r.DeadlineMs
	t.selected, t.acked = r.Selected, r.Acked
	if len(rec.TrainerModel) > 0 && equalHash(Hash(rec.TrainerModel), r.ModelHash) {
		t.model, t.modelHash = rec.TrainerModel, t.roundHash
	}
	if p := r.Pending; p != nil && !r.Acked {
		t.pending = m.msg(&wire.Update{
			Round: p.Round, ModelHash: p.ModelHash, Payload: p.Payload,
			Samples: p.Samples, Signature: p.Signature,
		})
	}
}
