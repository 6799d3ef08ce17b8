package simnet

import (
	"context"
	"math"
	"testing"
)

// TestEdgePeersLowRankMeetDeadline: in a lora-mnist federation at rank 8 on
// the wan profile (peers 10 Mbit/s up), a fifth of the peers are boards
// behind a 1 Mbit/s uplink. First the deadline the other peers meet is
// measured: the latest round close of a run without edge peers (every
// selected update in), plus 40 ms for the ±10 ms jitter of both legs. Under
// that deadline, edge peers training at rank 2 get every selected update in
// and merged; edge peers training at the federation's rank 8 miss it in
// rounds that select them (their upload is four times longer), so the
// lower rank is what keeps a slow board in the federation.
func TestEdgePeersLowRankMeetDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains the lora-mnist base and runs three federations; skipped with -short")
	}
	base := Config{Scenario: "lora-mnist", Rank: 8, Net: "wan", Partition: "iid", Peers: 100, PerRound: 10,
		Rounds: 3, Seed: 5, Workers: 2}
	run := func(cfg Config) *Report {
		t.Helper()
		rep, err := Run(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	ref := run(base)
	deadline := 0.0
	for _, r := range ref.Rounds {
		if r.Accepted != r.Selected {
			t.Fatalf("reference round %d: %d of %d accepted with a 10-minute deadline", r.Round, r.Accepted, r.Selected)
		}
		deadline = math.Max(deadline, r.SimMs)
	}
	deadline += 40
	t.Logf("the other peers' deadline: %.0f ms", deadline)

	edge := base
	edge.EdgePeers, edge.EdgeUplinkMbit, edge.RoundTimeoutMs = 0.2, 1, int64(deadline)
	low := edge
	low.EdgeRank = 2
	full := edge
	full.EdgeRank = 8

	edgeSelected := 0
	for _, r := range run(low).Rounds {
		edgeSelected += r.EdgeSelected
		if r.Accepted != r.Selected || r.EdgeAccepted != r.EdgeSelected || r.Late != 0 {
			t.Errorf("edge peers at rank 2, round %d: %d of %d accepted, edge %d of %d, %d late; want every update in",
				r.Round, r.Accepted, r.Selected, r.EdgeAccepted, r.EdgeSelected, r.Late)
		}
	}
	if edgeSelected == 0 {
		t.Fatal("no round selected an edge peer: the test shows nothing")
	}
	missed := 0
	for _, r := range run(full).Rounds {
		missed += r.EdgeSelected - r.EdgeAccepted
		if r.Accepted+r.EdgeSelected-r.EdgeAccepted != r.Selected {
			t.Errorf("edge peers at rank 8, round %d: %d of %d accepted, edge %d of %d: a peer on the normal link missed the deadline",
				r.Round, r.Accepted, r.Selected, r.EdgeAccepted, r.EdgeSelected)
		}
	}
	if missed == 0 {
		t.Errorf("edge peers at the federation's rank 8 met the deadline too: it does not tell the ranks apart")
	}
}
