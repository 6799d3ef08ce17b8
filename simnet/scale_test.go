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
	heap := func(n int) int64 {
		cfg := testConfig()
		cfg.Peers, cfg.PerRound = n, 10
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s, err := newSim(context.Background(), cfg, &fakeTask{clients: n}, nil, simOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		// Run the first round: the followers' broadcasts included.
		for s.cur.round == 1 {
			if err := s.next(); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if s.materialised > 2*cfg.PerRound {
			t.Errorf("%d peers: %d machines after a round of %d", n, s.materialised, cfg.PerRound)
		}
		return int64(after.HeapAlloc) - int64(before.HeapAlloc)
	}
	small, large := heap(20_000), heap(120_000)
	perPeer := (large - small) / 100_000
	t.Logf("heap: %d bytes for 20k peers, %d for 120k: %d bytes per idle peer", small, large, perPeer)
	if perPeer > 512 {
		t.Errorf("%d bytes per idle peer, want at most 512", perPeer)
	}
}
