package node

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/wire"
)

// FuzzMachineMessages feeds the protocol machines what the network can
// bring: a sequence of messages, each of arbitrary bytes decoded as the
// runtime decodes them (wire.Unmarshal), from a member, the aggregator or
// a stranger. Both an aggregator and a trainer (peer-00) step every one.
// Neither may panic, and what they do stays within the protocol: the
// aggregator answers an update with exactly one ack to its sender, accepts
// at most one update per peer and round and only from selected members,
// never more than the quorum; a trainer only ever talks to the aggregator
// and only trains on a model whose bytes match its hash. Run it with
//
//	go test -run x -fuzz FuzzMachineMessages -fuzztime 60s ./node/
func FuzzMachineMessages(f *testing.F) {
	h := Hash(enc(100))
	sel := []PeerID{"peer-00", "peer-01", "peer-02"}
	env := func(e *wire.Envelope) []byte {
		if e.Federation == "" {
			e.Federation = fed
		}
		b, err := wire.Marshal(e)
		if err != nil {
			panic(err)
		}
		return b
	}
	upd := func(round uint64, hash, payload []byte, samples int64) []byte {
		return env(&wire.Envelope{Body: &wire.Envelope_Update{Update: &wire.Update{Round: round, ModelHash: hash, Payload: payload, Samples: samples}}})
	}
	start := env(&wire.Envelope{Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{Round: 1, ModelHash: h, Selected: sel, DeadlineMs: 1000}}})
	model := env(&wire.Envelope{Body: &wire.Envelope_ModelResponse{ModelResponse: &wire.ModelResponse{ModelHash: h, Model: enc(100), TotalSize: 8}}})
	half := env(&wire.Envelope{Body: &wire.Envelope_ModelResponse{ModelResponse: &wire.ModelResponse{ModelHash: h, Model: enc(100)[:4], TotalSize: 8}}})
	forged := env(&wire.Envelope{Body: &wire.Envelope_ModelResponse{ModelResponse: &wire.ModelResponse{ModelHash: h, Model: enc(101), TotalSize: 8}}})
	ack := env(&wire.Envelope{Body: &wire.Envelope_UpdateAck{UpdateAck: &wire.UpdateAck{Round: 1, Accepted: true}}})
	result := env(&wire.Envelope{Body: &wire.Envelope_RoundResult{RoundResult: &wire.RoundResult{Round: 1, ModelHash: Hash(enc(103)), Accepted: 3}}})
	req := env(&wire.Envelope{Body: &wire.Envelope_ModelRequest{ModelRequest: &wire.ModelRequest{ModelHash: h, Offset: 4}}})

	// A record is [sender][length u16][message].
	rec := func(from int, msg []byte) []byte {
		return append(binary.LittleEndian.AppendUint16([]byte{byte(from)}, uint16(len(msg))), msg...)
	}
	f.Add(slices.Concat(rec(0, upd(1, h, enc(1), 1)), rec(1, upd(1, h, enc(2), 1)), rec(1, upd(1, h, enc(3), 1)),
		rec(2, upd(1, h, enc(2), 4)), rec(2, upd(1, h, enc(2), 4)), rec(0, upd(1, h, enc(2), 1))))
	f.Add(slices.Concat(rec(4, upd(1, h, enc(1), 1)), rec(6, upd(1, h, enc(1), 1)), rec(0, upd(2, h, enc(1), 1)),
		rec(0, upd(1, h, []byte("bad"), 1)), rec(0, upd(1, h, enc(1), 0)), rec(0, req)))
	f.Add(slices.Concat(rec(5, start), rec(5, half), rec(5, model), rec(5, ack), rec(5, result)))
	f.Add(slices.Concat(rec(5, start), rec(6, model), rec(5, forged), rec(1, start), rec(5, model)))
	f.Add(slices.Concat(rec(0, []byte{0x0a, 0x40}), rec(0, nil), rec(5, []byte{0xf8, 0x06, 0x01})))

	senders := append(peers(5), aggr, "mallory")
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := aggConfig(baseConfig(5))
		cfg.Select = func(_ uint64, members []PeerID, k int, _ uint64) []PeerID { return members[:k] }
		ag, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := New(trainerConfig(baseConfig(5), "peer-00"))
		if err != nil {
			t.Fatal(err)
		}
		now := int64(0)
		checkTrainer := func(acts []Action) {
			for _, a := range acts {
				switch a := a.(type) {
				case Send:
					if a.To != aggr {
						t.Fatalf("the trainer sends to %s", a.To)
					}
				case Broadcast:
					t.Fatalf("the trainer broadcasts %v", a.Msg)
				case Train:
					if !bytes.Equal(Hash(a.Model), a.ModelHash) {
						t.Fatalf("the trainer trains on a model that does not match its hash")
					}
					// Train at once, so that the sequence can go on to
					// the update and its ack.
					checkTrainerNoPanic(t, tr, now, TrainDone{Round: a.Round, ModelHash: a.ModelHash, Payload: enc(7), Samples: 1})
				}
			}
		}
		checkTrainer(tr.Step(now, Start{}))
		ag.Step(now, Start{})
		accepted := map[uint64]map[PeerID]bool{}
		for len(in) >= 3 {
			from := senders[int(in[0])%len(senders)]
			n := min(int(binary.LittleEndian.Uint16(in[1:])), len(in)-3)
			data := in[3 : 3+n]
			in = in[3+n:]
			now++
			msg, err := wire.Unmarshal(data, 1<<16)
			if err != nil {
				continue
			}
			// The aggregator.
			before := ag.Status()
			acts := ag.Step(now, Recv{From: from, Msg: msg})
			if u := msg.GetUpdate(); u != nil && !before.Done {
				var acks []*wire.UpdateAck
				for _, a := range acts {
					if s, ok := a.(Send); ok && s.Msg.GetUpdateAck() != nil {
						if s.To != from {
							t.Fatalf("an ack to %s for an update from %s", s.To, from)
						}
						acks = append(acks, s.Msg.GetUpdateAck())
					}
				}
				if len(acks) != 1 {
					t.Fatalf("%d acks for one update", len(acks))
				}
				stored := false
				for _, a := range acts {
					if p, ok := a.(Persist); ok && p.Update != nil {
						stored = true
						if p.Update.From != from || !slices.Contains(before.Selected, from) || p.Update.Round != before.Round {
							t.Fatalf("accepted an update of %s for round %d (round %d, selected %v)", from, p.Update.Round, before.Round, before.Selected)
						}
						if accepted[p.Update.Round] == nil {
							accepted[p.Update.Round] = map[PeerID]bool{}
						}
						if accepted[p.Update.Round][from] {
							t.Fatalf("a second update of %s accepted in round %d", from, p.Update.Round)
						}
						accepted[p.Update.Round][from] = true
					}
				}
				if stored && !acks[0].GetAccepted() {
					t.Fatalf("an update was stored and refused (%q)", acks[0].GetReason())
				}
			}
			if st := ag.Status(); st.Accepted > ag.Config().Quorum {
				t.Fatalf("%d updates accepted, quorum %d", st.Accepted, ag.Config().Quorum)
			}
			// The trainer.
			checkTrainer(tr.Step(now, Recv{From: from, Msg: msg}))
		}
	})
}

func checkTrainerNoPanic(t *testing.T, tr *Machine, now int64, ev Event) {
	for _, a := range tr.Step(now, ev) {
		if s, ok := a.(Send); ok && s.To != aggr {
			t.Fatalf("the trainer sends to %s", s.To)
		}
	}
}
