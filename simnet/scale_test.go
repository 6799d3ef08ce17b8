package simnet

import (
	"context"
	"runtime"
	"testing"
)

// TestIdlePeersCostLittle: a peer that takes part in no round costs its
// identity, its link and a follower record: a few hundred bytes, with the
// aggregator's membership (no machine, no model, no copy of the membership).
func TestIdlePeersCostLittle(t *testing.T) {
	// heap is what a simulator of n peers holds after its first round: the
	// live heap with it, less the live heap once it is gone (both after a
	// collection), so that garbage of earlier tests cannot skew it.
	heap := func(n int) int64 {
		cfg := testConfig()
		cfg.Peers, cfg.PerRound = n, 10
		s, err := newSim(context.Background(), cfg, &fakeTask{clients: n}, nil, simOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Run the first round: the followers' broadcasts included.
		for s.cur.round == 1 {
			if err := s.next(); err != nil {
				t.Fatal(err)
			}
		}
		if s.materialised > 2*cfg.PerRound {
			t.Errorf("%d peers: %d machines after a round of %d", n, s.materialised, cfg.PerRound)
		}
		var with, without runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&with)
		s.close()
		runtime.KeepAlive(s)
		s = nil
		runtime.GC()
		runtime.ReadMemStats(&without)
		return int64(with.HeapAlloc) - int64(without.HeapAlloc)
	}
	small, large := heap(20_000), heap(120_000)
	perPeer := (large - small) / 100_000
	t.Logf("heap: %d bytes for 20k peers, %d for 120k: %d bytes per idle peer", small, large, perPeer)
	if perPeer > 512 {
		t.Errorf("%d bytes per idle peer, want at most 512", perPeer)
	}
}
