package node

// Integration tests over libp2p: many peers in one process, each a real
// go-libp2p host (QUIC over marcopolo/simnet's simulated UDP) with the
// daemon's p2p.Host services, a Runtime and an in-memory Badger store, in
// virtual time (testing/synctest). The harness is in libp2p_helpers_test.go.

import (
	"slices"
	"testing"
	"time"

	"github.com/fedrank/fedrank/p2p"
)

// TestLibp2pFederation: an aggregator and 30 trainers run four rounds of 10
// selected trainers with a quorum of 8, over gossipsub announcements and
// direct streams. Every round closes at its quorum with the fastest eight
// signed updates; every store ends with the aggregator's last result; the
// final model is 100 plus exactly the accepted peers' payloads.
func TestLibp2pFederation(t *testing.T) {
	runSim(t, func(t *testing.T) {
		const rounds = 4
		f := newSimFed(t, simOptions{
			trainers: 30,
			ring:     2,
			// 20-99 ms, varied by peer and round: the quorum takes the
			// fastest eight, and the two slowest come late.
			trainTime: func(i int, r uint64) time.Duration {
				return time.Duration(20+(i*37+int(r)*11)%80) * time.Millisecond
			},
		})
		f.Cfg.PerRound, f.Cfg.Quorum, f.Cfg.MinUpdates, f.Cfg.Rounds = 10, 8, 2, rounds
		f.Cfg.SilenceMs = 3000
		start := time.Now()
		f.start()
		f.waitDone(rounds, 30*time.Second)
		t.Logf("%d rounds in %v of virtual time", rounds, time.Since(start))

		results := f.checkResults(rounds)
		for i, res := range results {
			if !res.Advanced || res.Reason != "quorum" || res.Accepted != 8 {
				t.Errorf("round %d: advanced %v, reason %q, accepted %d; want a quorum of 8", i+1, res.Advanced, res.Reason, res.Accepted)
			}
		}
		// Every trainer heard every round over gossipsub (a trainer never
		// selected learns the results from announcements only), and nobody
		// was ever silent.
		for _, p := range f.trainers {
			for r := uint64(1); r <= rounds; r++ {
				if !p.hasResult(r) {
					t.Errorf("%s: no result for round %d", p.name, r)
				}
			}
			if n := p.logs.count(logSilent); n > 0 {
				t.Errorf("%s: reported the aggregator silent %d times", p.name, n)
			}
			if st := p.host.Stats(); st.AnnouncementsIn < 2*rounds {
				t.Errorf("%s: %d announcements in, want >= %d", p.name, st.AnnouncementsIn, 2*rounds)
			}
		}
		// The updates came over direct streams: eight accepted per round,
		// with a model request before each training.
		st := f.agg.host.Stats()
		if st.AnnouncementsOut < 2*rounds || st.MessagesIn < 2*8*rounds {
			t.Errorf("aggregator's p2p stats %+v: want >= %d announcements out, >= %d messages in", st, 2*rounds, 2*8*rounds)
		}
		// No message was refused (a late gossip of a stale round may be
		// dropped by design: p2p.ReasonAnnounceIgnored).
		for _, p := range f.peers {
			for reason, n := range p.host.Stats().Rejected {
				if n > 0 && reason != p2p.ReasonAnnounceIgnored {
					t.Errorf("%s: p2p rejected %d messages (%s)", p.name, n, reason)
				}
			}
		}
	})
}

// TestLibp2pPartitionHeals: twelve trainers, six selected per round, all six
// needed for the quorum. When round 2 opens, three of its selected trainers
// and two others are cut off from the rest of the network. Round 2 closes at
// its deadline with the other three updates; the cut-off trainers report the
// aggregator silent once the silence timeout passes. The network heals
// while round 3 is open, once round 2's result and round 3's RoundStart have
// left gossipsub's message cache (so no gossip brings them back): the
// cut-off trainers selected in round 3 get its RoundStart again from the
// aggregator (which resends it to the selected peers it has not heard from),
// learn round 2's result from its previous field, and take part. Every later
// round closes at its quorum with every selected trainer, the cut-off ones
// included; the silence clears; every store ends with the same last result.
func TestLibp2pPartitionHeals(t *testing.T) {
	runSim(t, func(t *testing.T) {
		const (
			k      = 2 // the round during which the partition comes
			rounds = 5
			// gossipCache is how long gossipsub can still deliver a
			// message a peer missed (IHAVE/IWANT from its message cache:
			// 5 heartbeats of 1 s, the defaults p2p.Attach keeps).
			gossipCache = 5500 * time.Millisecond
		)
		gate := make(chan struct{}) // closed once the partition is in place
		var f *simFed
		f = newSimFed(t, simOptions{
			trainers:  12,
			ring:      2,
			trainTime: func(i int, r uint64) time.Duration { return time.Duration(40+(i*13)%40) * time.Millisecond },
			// The cut-off trainers' round-k updates wait for the cut: none
			// reaches the aggregator however the two race.
			beforeUpdate: func(i int, r uint64) {
				if r == k {
					<-gate
				}
			},
		})
		defer func() {
			select {
			case <-gate:
			default:
				close(gate)
			}
		}()
		// Rounds last long enough for the heal to come within round k+1
		// after gossipCache, before the aggregator's last RoundStart resend
		// (RetryMs doubling: 6.3 s after the round opens). The silence
		// timeout is above the round timeout, so that a connected trainer
		// that is not selected is never silent, and below the cut, which
		// lasts from round k's start to gossipCache after its deadline.
		f.Cfg.PerRound, f.Cfg.Quorum, f.Cfg.MinUpdates, f.Cfg.Rounds = 6, 6, 2, rounds
		f.Cfg.RoundTimeoutMs, f.Cfg.RetryMs, f.Cfg.SilenceMs = 8000, 100, 9000
		// A seed (selections are fixed by it and the deterministic keys)
		// under which round k+1 selects a trainer that round k selected.
		sel := func(r uint64) []PeerID { return SelectUniform(r, f.members, f.Cfg.PerRound, f.Cfg.Seed) }
		for f.Cfg.Seed = 1; !overlaps(sel(k), sel(k+1)); f.Cfg.Seed++ {
		}
		// Cut: three trainers selected in round k, those also selected in
		// round k+1 first, and two trainers not selected in round k.
		selK, selK1 := sel(k), sel(k+1)
		slices.SortStableFunc(selK, func(a, b PeerID) int {
			return boolInt(slices.Contains(selK1, b)) - boolInt(slices.Contains(selK1, a))
		})
		cutSel := selK[:3]
		var cutOther []PeerID
		for _, p := range f.members {
			if !slices.Contains(selK, p) && len(cutOther) < 2 {
				cutOther = append(cutOther, p)
			}
		}
		var side []*simPeer
		for _, id := range slices.Concat(cutSel, cutOther) {
			side = append(side, f.byID(id))
		}
		isCut := func(p *simPeer) bool { return slices.Contains(side, p) }
		t.Logf("seed %d; round %d selects %v, round %d %v; cut %v", f.Cfg.Seed,
			k, f.names(sel(k)), k+1, f.names(selK1), f.names(slices.Concat(cutSel, cutOther)))

		f.start()
		f.waitFor("round k open", 30*time.Second, func() bool { return f.agg.rt.Status().Round >= k })
		f.partition(side)
		close(gate)
		cutAt := time.Now()

		f.waitFor("the cut-off trainers silent, round k's result out of the gossip cache", 30*time.Second, func() bool {
			for _, p := range side {
				if p.rt.Status().SilentSince == nil {
					return false
				}
			}
			res, err := f.agg.store.Result(k)
			return err == nil && time.Since(time.UnixMilli(res.ClosedMs)) >= gossipCache
		})
		t.Logf("heal %v after the cut", time.Since(cutAt))
		if r := f.agg.rt.Status().Round; r != k+1 {
			t.Fatalf("aggregator in round %d before the heal, want %d (round k+1 waits for its cut-off trainers)", r, k+1)
		}
		for _, p := range f.trainers {
			if !isCut(p) && p.rt.Status().SilentSince != nil {
				t.Errorf("%s (connected) reports the aggregator silent", p.name)
			}
			if isCut(p) && p.hasResult(k) {
				t.Errorf("%s heard round %d's result while cut off", p.name, k)
			}
		}

		f.heal(side)
		f.waitDone(rounds, 60*time.Second)
		results := f.checkResults(rounds)

		resK := results[k-1]
		if !resK.Advanced || resK.Reason != "deadline" || resK.Accepted != 3 {
			t.Errorf("round %d: advanced %v, reason %q, accepted %d; want the deadline with 3 updates", k, resK.Advanced, resK.Reason, resK.Accepted)
		}
		for _, p := range resK.AcceptedPeers {
			if slices.Contains(cutSel, p) {
				t.Errorf("round %d accepted %s's update, sent while it was cut off", k, f.name(p))
			}
		}
		for r := uint64(k + 1); r <= rounds; r++ {
			res := results[r-1]
			if !res.Advanced || res.Reason != "quorum" || res.Accepted != f.Cfg.PerRound {
				t.Errorf("round %d: advanced %v, reason %q, accepted %v of %v; want every selected trainer",
					r, res.Advanced, res.Reason, f.names(res.AcceptedPeers), f.names(res.Selected))
			}
		}
		tookPart := 0
		for _, p := range side {
			if s := p.rt.Status(); s.SilentSince != nil {
				t.Errorf("%s: still reports the aggregator silent since %v", p.name, s.SilentSince)
			}
			if n := p.logs.count(logSilent); n != 1 {
				t.Errorf("%s: reported the aggregator silent %d times, want once", p.name, n)
			}
			for r := uint64(k + 1); r <= rounds; r++ {
				if !p.hasResult(r) {
					t.Errorf("%s: no result for round %d after the heal", p.name, r)
				}
				if slices.Contains(results[r-1].AcceptedPeers, p.id) {
					tookPart++
				}
			}
			// Selected in round k+1, it heard that round's RoundStart after
			// the heal, and round k's result with it.
			if slices.Contains(selK1, p.id) && !p.hasResult(k) {
				t.Errorf("%s: no result for round %d: the RoundStart of round %d did not bring it", p.name, k, k+1)
			}
		}
		if tookPart == 0 {
			t.Error("no cut-off trainer took part in a round after the heal")
		}
		for _, p := range f.trainers {
			if !isCut(p) && p.logs.count(logSilent) > 0 {
				t.Errorf("%s (never cut off) reported the aggregator silent", p.name)
			}
		}
	})
}

func overlaps(a, b []PeerID) bool {
	for _, p := range a {
		if slices.Contains(b, p) {
			return true
		}
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
