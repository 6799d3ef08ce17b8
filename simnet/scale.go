package simnet

import (
	"fmt"
	"math"
	"slices"

	"github.com/fedrank/fedrank/node"
)

// How the simulator scales to many peers.
//
// A peer that is not taking part in a round costs its identity, its link
// state and a follower record: no protocol machine, no model, no copy of
// the membership (only the aggregator's machine keeps the membership; a
// trainer's node.Config lists itself). All told, with its entries in the
// aggregator's membership and the simulator's ID index, about 230 bytes
// (TestIdlePeersCostLittle); nothing is O(peers²). A
// trainer's node.Machine is made when an announcement selects it
// (materialised) and dropped again (back to a follower record) when an
// announcement that does not select it finds it holding nothing: its round
// over, no model worth keeping.
//
// A broadcast still costs O(peers) arithmetic, since every copy takes its
// time on the links and draws its jitter and loss from the network's
// generator in peer order, exactly as if it were delivered (so a run gives
// the same result with and without this laziness); but only the copies to
// materialised peers and to the peers an announcement selects become events.
// A follower's copy of an announcement is recorded instead (its arrival time,
// or that it was lost), and folded into the follower's round when the
// follower next hears anything: a trainer that is not selected only needs
// the latest round it heard, to tell a stale announcement from a new one.
//
// Peers without training data are never selected: the aggregator's
// selection (node.Config.Select) draws from the peers that hold data, while
// its membership stays everyone.

// follower is what the simulator keeps of a trainer without a machine.
type follower struct {
	// round is the latest round announced to the peer that it heard (0: it
	// has heard none since it started empty).
	round uint64
	// crashed > 0: the peer crashed (--crash) on the announcement of this
	// round; it restarts, empty, at the first later announcement it hears.
	crashed uint64
	// startAt is when the copy of the latest announcement broadcast reaches
	// it, if that copy was not delivered as an event (math.MaxInt64: none
	// pending).
	startAt int64
}

// hear folds into f an announcement of round r that reached the follower.
func (f *follower) hear(r uint64) {
	f.startAt = math.MaxInt64
	if f.crashed > 0 {
		if r > f.crashed {
			f.crashed, f.round = 0, r // restarted empty, then heard r
		}
		return
	}
	f.round = max(f.round, r)
}

// resolve returns peer p's follower record with the announcement copies that
// have reached it by now folded in.
func (s *sim) resolve(p int) *follower {
	f := &s.fol[p]
	if f.startAt <= s.now {
		f.hear(s.lastStart)
	}
	return f
}

// materialise gives peer p a fresh trainer machine (it accepts any newer
// announcement; the follower record says which are newer).
func (s *sim) materialise(p int) (*simNode, error) {
	cfg := s.trainerCfg
	cfg.ID = s.ids[p]
	cfg.Members = []node.PeerID{cfg.ID} // a trainer keeps no membership
	m, err := node.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("simnet: %s: %w", cfg.ID, err)
	}
	s.incarnations++
	n := &simNode{id: cfg.ID, client: p, m: m, timers: map[node.TimerID]uint64{}, incarnation: s.incarnations,
		samples: int64(s.task.ClientSamples(p)), beh: honest{}}
	if s.attack != nil && p < s.attack.attackers {
		n.beh = s.attack.behaviour()
	}
	if b, ok := s.opts.behaviours[p]; ok {
		n.beh = b
	}
	s.nodes[1+p] = n
	s.materialised++
	s.fol[p].startAt = math.MaxInt64
	return n, nil
}

// dematerialise drops peer p's machine; it follows from round on. Its timers
// and training in progress die with the machine (their events find no node,
// or another incarnation).
func (s *sim) dematerialise(p int, round uint64) {
	s.nodes[1+p] = nil
	s.materialised--
	f := &s.fol[p]
	f.round, f.crashed, f.startAt = round, 0, math.MaxInt64
}

// eligibleMembers returns the sorted IDs of the peers that hold training
// data, or nil when they all do.
func eligibleMembers(ids []string, samples func(int) int) []node.PeerID {
	var out []node.PeerID
	for p, id := range ids {
		if samples(p) > 0 {
			out = append(out, id)
		}
	}
	if len(out) == len(ids) {
		return nil
	}
	slices.Sort(out)
	return out
}
