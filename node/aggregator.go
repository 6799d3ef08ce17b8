package node

import (
	"fmt"
	"slices"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/wire"
)

// aggregatorState is the aggregator's side of the protocol. A round is always
// open between Start and Done: closing one opens the next in the same Step.
type aggregatorState struct {
	agg     aggregate.Aggregator
	started bool // Start was stepped (a restored machine re-announces its open round then)

	round                 uint64
	model, hash           []byte // the open round's global model
	prevModel, prevHash   []byte // the model before it (still served to late trainers)
	selected              []PeerID
	isSelected            map[PeerID]bool
	acceptedPeers         []PeerID
	acceptedHash          map[PeerID][]byte // payload hash per accepted peer
	prevAccepted          map[PeerID][]byte // acceptedHash of the previous round
	updateHashes          [][]byte          // payload hashes in acceptance order
	rejected              []Rejection
	startedMs, deadlineMs int64
	start                 *wire.Envelope  // the round's RoundStart
	heard                 map[PeerID]bool // selected peers that asked for the model or sent an update
	announceDelay         int64           // next RoundStart resend delay, 0 when none is pending
	// result is the last closed round's RoundResult: carried by the next
	// RoundStart, and broadcast again a few times after the last round.
	result     *wire.RoundResult
	finalDelay int64 // next rebroadcast of the final result, 0 when none is pending
}

// finalRebroadcasts is how many times the last round's result is broadcast
// again after the first, at RetryMs, 2·RetryMs, 4·RetryMs: a member that was
// reconnecting when it went out still hears that the federation is done.
const finalRebroadcasts = 3

func (m *Machine) stepAggregator(now int64, ev Event) []Action {
	a := m.agg
	switch ev := ev.(type) {
	case Start:
		if a.started || m.done {
			return nil
		}
		a.started = true
		if a.round > 0 {
			return m.resume(now)
		}
		if err := m.prepareRound(now, 1); err != nil {
			return m.fail(nil, err)
		}
		return m.announceRound(now, []Action{Persist{Open: a.openRecord()}})
	case Recv:
		switch body := ev.Msg.GetBody().(type) {
		case *wire.Envelope_Update:
			return m.onUpdate(now, ev.From, ev.Msg.GetFederation(), body.Update)
		case *wire.Envelope_ModelRequest:
			return m.onModelRequest(ev.From, ev.Msg.GetFederation(), body.ModelRequest)
		default:
			m.c.Ignored++
		}
	case TimerFired:
		switch {
		case ev.ID.Kind == TimerFinal && m.done && a.finalDelay > 0 && a.result != nil && ev.ID.Round == a.result.GetRound():
			return m.rebroadcastFinal(now)
		case a.round == 0 || m.done || !a.started || ev.ID.Round != a.round:
		case ev.ID.Kind == TimerDeadline:
			return m.closeRound(now, "deadline", nil)
		case ev.ID.Kind == TimerAnnounce && a.announceDelay > 0:
			return m.announce(now)
		}
		m.c.Stale++
	case TrainDone:
		m.c.Ignored++
	}
	return nil
}

// prepareRound makes round r the open round: selection, a fresh aggregate
// from the current model, the deadline. It emits nothing: the caller persists
// the round (Open or Commit) and then announces it with announceRound.
func (m *Machine) prepareRound(now int64, r uint64) error {
	a := m.agg
	if err := a.agg.Begin(r, a.model); err != nil {
		return fmt.Errorf("node: round %d: aggregator %s: Begin: %w", r, a.agg.Name(), err)
	}
	sel, err := m.selectPeers(r)
	if err != nil {
		return err
	}
	a.setRound(r, sel, now, now+m.cfg.RoundTimeoutMs)
	return nil
}

// setRound resets the per-round state for round r.
func (a *aggregatorState) setRound(r uint64, sel []PeerID, startedMs, deadlineMs int64) {
	a.round = r
	a.selected = sel
	a.isSelected = make(map[PeerID]bool, len(sel))
	for _, p := range sel {
		a.isSelected[p] = true
	}
	a.acceptedPeers, a.updateHashes, a.rejected = nil, nil, nil
	a.acceptedHash = make(map[PeerID][]byte, len(sel))
	a.startedMs, a.deadlineMs = startedMs, deadlineMs
	a.heard = make(map[PeerID]bool, len(sel))
	a.start = nil
}

// openRecord is what the store keeps of the open round.
func (a *aggregatorState) openRecord() *storage.OpenRound {
	return &storage.OpenRound{
		Round:         a.round,
		ModelHash:     a.hash,
		PrevModelHash: a.prevHash,
		Selected:      a.selected,
		StartedMs:     a.startedMs,
		DeadlineMs:    a.deadlineMs,
	}
}

// announceRound appends the open round's announcement and timers to acts.
func (m *Machine) announceRound(now int64, acts []Action) []Action {
	a := m.agg
	a.start = m.msg(&wire.RoundStart{
		Round:      a.round,
		ModelHash:  a.hash,
		Selected:   slices.Clone(a.selected),
		DeadlineMs: a.deadlineMs,
		Previous:   a.result,
	})
	acts = append(acts,
		Broadcast{Msg: a.start},
		SetTimer{ID: TimerID{TimerDeadline, a.round}, AtMs: a.deadlineMs},
	)
	a.announceDelay = 0
	if at := now + m.retryMs; at < a.deadlineMs {
		a.announceDelay = m.retryMs
		acts = append(acts, SetTimer{ID: TimerID{TimerAnnounce, a.round}, AtMs: at})
	}
	return acts
}

// resume carries on a round restored from the store: it closes at once if
// its stored updates already make the quorum (the crash came between the last
// update and the commit) or its deadline passed while the aggregator was
// down; otherwise it announces the round again, with its original deadline.
func (m *Machine) resume(now int64) []Action {
	a := m.agg
	switch {
	case len(a.acceptedPeers) >= m.cfg.Quorum:
		return m.closeRound(now, "quorum", nil)
	case now >= a.deadlineMs:
		return m.closeRound(now, "deadline", nil)
	}
	return m.announceRound(now, nil)
}

// announce resends the RoundStart to the selected peers that are silent: an
// announcement is a broadcast, and a lost one would keep a peer out of the round.
func (m *Machine) announce(now int64) []Action {
	a := m.agg
	var acts []Action
	for _, p := range a.selected {
		if !a.heard[p] {
			acts = append(acts, Send{To: p, Msg: a.start})
			m.c.Resends++
		}
	}
	a.announceDelay *= 2
	if at := now + a.announceDelay; at < a.deadlineMs && len(acts) > 0 {
		acts = append(acts, SetTimer{ID: TimerID{TimerAnnounce, a.round}, AtMs: at})
	} else {
		a.announceDelay = 0
	}
	return acts
}

func (m *Machine) selectPeers(r uint64) ([]PeerID, error) {
	f := m.cfg.Select
	if f == nil {
		f = SelectUniform
	}
	k := m.cfg.PerRound
	sel := f(r, slices.Clone(m.members), k, m.cfg.Seed)
	if len(sel) != k {
		return nil, fmt.Errorf("node: round %d: Config.Select returned %d peers, want PerRound = %d", r, len(sel), k)
	}
	seen := make(map[PeerID]bool, k)
	for _, p := range sel {
		if !m.member[p] || seen[p] {
			return nil, fmt.Errorf("node: round %d: Config.Select returned %q, not a distinct member", r, p)
		}
		seen[p] = true
	}
	return slices.Clone(sel), nil
}

// fail stops the aggregator on an error it cannot recover from.
func (m *Machine) fail(acts []Action, err error) []Action {
	m.done = true
	if a := m.agg; a.round > 0 {
		acts = append(acts, CancelTimer{ID: TimerID{TimerDeadline, a.round}})
		if a.announceDelay > 0 {
			acts = append(acts, CancelTimer{ID: TimerID{TimerAnnounce, a.round}})
		}
	}
	return append(acts, Done{Err: err})
}

func (m *Machine) onUpdate(now int64, from PeerID, fed string, u *wire.Update) []Action {
	a := m.agg
	if m.done || !a.started {
		m.c.Ignored++ // the federation's run is over, or not begun
		return nil
	}
	ack := func(accepted bool, reason Reason) []Action {
		return []Action{Send{To: from, Msg: m.msg(&wire.UpdateAck{Round: u.GetRound(), Accepted: accepted, Reason: string(reason)})}}
	}
	reject := func(reason Reason, detail string) []Action {
		a.rejected = append(a.rejected, Rejection{From: from, Round: u.GetRound(), Reason: reason, Detail: detail})
		return ack(false, reason)
	}
	switch {
	case fed != m.cfg.Federation:
		return reject(RejectWrongFederation, fmt.Sprintf("federation %q", fed))
	case !m.member[from]:
		return reject(RejectNotMember, "")
	case u.GetRound() == a.round-1 && len(u.GetPayload()) <= m.cfg.MaxUpdateBytes &&
		equalHash(a.prevAccepted[from], Hash(u.GetPayload())):
		// A resend of an update accepted in the round that just closed (our ack
		// was lost): acknowledge it again rather than count a rejection.
		m.c.Resends++
		return ack(true, "")
	case u.GetRound() != a.round:
		return reject(RejectWrongRound, fmt.Sprintf("update for round %d, round %d is open", u.GetRound(), a.round))
	case !a.isSelected[from]:
		return reject(RejectNotSelected, "")
	}
	a.heard[from] = true
	switch {
	case !equalHash(u.GetModelHash(), a.hash):
		return reject(RejectWrongModel, fmt.Sprintf("model %x", u.GetModelHash()))
	case len(u.GetPayload()) > m.cfg.MaxUpdateBytes:
		return reject(RejectOversized, fmt.Sprintf("%d bytes, limit %d", len(u.GetPayload()), m.cfg.MaxUpdateBytes))
	case u.GetSamples() <= 0:
		return reject(RejectBadSamples, fmt.Sprintf("samples %d", u.GetSamples()))
	}
	h := Hash(u.GetPayload())
	if prev, dup := a.acceptedHash[from]; dup {
		if equalHash(prev, h) {
			// The same update again: our ack was lost. Acknowledge, count once.
			m.c.Resends++
			return ack(true, "")
		}
		return reject(RejectDuplicate, "")
	}
	if m.cfg.Verify != nil {
		if err := m.cfg.Verify(from, SignedUpdate(m.cfg.Federation, u.GetRound(), u.GetModelHash(), h), u.GetSignature()); err != nil {
			return reject(RejectBadSignature, err.Error())
		}
	}
	rec := &storage.Update{
		Round:     a.round,
		Seq:       len(a.acceptedPeers),
		From:      from,
		ModelHash: a.hash,
		Payload:   u.GetPayload(),
		Samples:   u.GetSamples(),
		Signature: u.GetSignature(),
		Hash:      h,
	}
	if err := m.accept(rec); err != nil {
		return reject(RejectInvalidPayload, err.Error())
	}
	// Durable before it is acknowledged or can close the round.
	acts := append([]Action{Persist{Update: rec}}, ack(true, "")...)
	if len(a.acceptedPeers) == m.cfg.Quorum {
		acts = m.closeRound(now, "quorum", acts)
	}
	return acts
}

// accept folds a checked update into the round's aggregate.
func (m *Machine) accept(u *storage.Update) error {
	a := m.agg
	if err := a.agg.Add(aggregate.Update{Peer: u.From, Samples: u.Samples, Payload: u.Payload}); err != nil {
		return err
	}
	a.acceptedHash[u.From] = u.Hash
	a.acceptedPeers = append(a.acceptedPeers, u.From)
	a.updateHashes = append(a.updateHashes, u.Hash)
	return nil
}

// closeRound ends the open round (how: "quorum" or "deadline"), commits its
// result with the new model and the next round, announces the result and
// opens the next round or reports Done.
func (m *Machine) closeRound(now int64, how string, acts []Action) []Action {
	a := m.agg
	r, n := a.round, len(a.acceptedPeers)
	rc := RoundClosed{
		Round:         r,
		Selected:      len(a.selected),
		Accepted:      n,
		SelectedPeers: a.selected,
		AcceptedPeers: a.acceptedPeers,
		Rejected:      a.rejected,
		StartedMs:     a.startedMs,
		ClosedMs:      now,
	}
	var used [][]byte
	var newModel []byte
	if n >= m.cfg.MinUpdates {
		model, err := a.agg.Finalize()
		if err != nil {
			return m.fail(acts, fmt.Errorf("node: round %d: aggregator %s: Finalize: %w", r, a.agg.Name(), err))
		}
		a.prevModel, a.prevHash = a.model, a.hash
		a.model, a.hash = model, Hash(model)
		newModel = model
		used = a.updateHashes
		rc.Advanced, rc.Reason = true, how
	} else {
		rc.Reason = fmt.Sprintf("%s with %d accepted updates, fewer than MinUpdates = %d: model unchanged", how, n, m.cfg.MinUpdates)
	}
	rc.Model, rc.ModelHash = a.model, a.hash
	a.prevAccepted = a.acceptedHash
	commit := &storage.Commit{
		Result: storage.Result{
			Round:         r,
			ModelHash:     a.hash,
			UpdateHashes:  used,
			Advanced:      rc.Advanced,
			Reason:        rc.Reason,
			Selected:      a.selected,
			AcceptedPeers: a.acceptedPeers,
			Accepted:      n,
			Rejected:      countReasons(a.rejected),
			StartedMs:     a.startedMs,
			ClosedMs:      now,
		},
		Model: newModel,
	}
	a.result = &wire.RoundResult{
		Round:        r,
		ModelHash:    a.hash,
		UpdateHashes: used,
		Accepted:     uint32(n),
		Rejected:     uint32(len(a.rejected)),
	}
	result := m.msg(a.result)
	if now < a.deadlineMs {
		acts = append(acts, CancelTimer{ID: TimerID{TimerDeadline, r}})
	}
	if a.announceDelay > 0 {
		acts = append(acts, CancelTimer{ID: TimerID{TimerAnnounce, r}})
		a.announceDelay = 0
	}
	last := m.cfg.Rounds > 0 && r >= m.cfg.Rounds
	if !last {
		if err := m.prepareRound(now, r+1); err != nil {
			return m.fail(acts, err)
		}
		commit.Next = a.openRecord()
	}
	acts = append(acts, Persist{Commit: commit}, Broadcast{Msg: result}, rc)
	if last {
		m.done = true
		a.finalDelay = m.retryMs
		return append(acts, SetTimer{ID: TimerID{TimerFinal, r}, AtMs: now + a.finalDelay}, Done{})
	}
	return m.announceRound(now, acts)
}

// rebroadcastFinal broadcasts the last round's result again.
func (m *Machine) rebroadcastFinal(now int64) []Action {
	a := m.agg
	acts := []Action{Broadcast{Msg: m.msg(a.result)}}
	if a.finalDelay *= 2; a.finalDelay < m.retryMs<<finalRebroadcasts {
		acts = append(acts, SetTimer{ID: TimerID{TimerFinal, a.result.GetRound()}, AtMs: now + a.finalDelay})
	} else {
		a.finalDelay = 0
	}
	return acts
}

// countReasons counts rejections per reason (nil when there are none).
func countReasons(rej []Rejection) map[string]int {
	if len(rej) == 0 {
		return nil
	}
	out := make(map[string]int)
	for _, r := range rej {
		out[string(r.Reason)]++
	}
	return out
}

func (m *Machine) onModelRequest(from PeerID, fed string, req *wire.ModelRequest) []Action {
	a := m.agg
	if fed != m.cfg.Federation || !m.member[from] {
		m.c.Ignored++
		return nil
	}
	var model, hash []byte
	switch h := req.GetModelHash(); {
	case equalHash(h, a.hash):
		model, hash = a.model, a.hash
		if a.isSelected[from] && !m.done {
			a.heard[from] = true
		}
	case equalHash(h, a.prevHash):
		model, hash = a.prevModel, a.prevHash
	default:
		m.c.UnknownModels++
		return nil
	}
	off := req.GetOffset()
	if off > uint64(len(model)) {
		m.c.UnknownModels++ // past the end: nothing there to send
		return nil
	}
	chunk := model[off:]
	if c := m.cfg.ChunkBytes; c > 0 && len(chunk) > c {
		chunk = chunk[:c]
	}
	return []Action{Send{To: from, Msg: m.msg(&wire.ModelResponse{
		ModelHash: hash, Model: chunk, Offset: off, TotalSize: uint64(len(model)),
	})}}
}

// lastRejection is the open round's last rejected update, for the driver's
// log line (nil if none).
func (m *Machine) lastRejection() *Rejection {
	if m.agg == nil || len(m.agg.rejected) == 0 {
		return nil
	}
	return &m.agg.rejected[len(m.agg.rejected)-1]
}
