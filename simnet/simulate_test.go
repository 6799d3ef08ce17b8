package simnet

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fedrank/fedrank/internal/splitmix"
)

func testConfig() Config {
	return Config{
		Scenario: "fake", Peers: 20, PerRound: 5, Rounds: 4, Seed: 1,
		Aggregator: "sum", Net: "ideal", Quorum: 1, RoundTimeoutMs: 10_000, Workers: 2,
	}
}

func run(t *testing.T, cfg Config, ft *fakeTask, opts simOptions) *Report {
	t.Helper()
	if ft == nil {
		ft = &fakeTask{clients: cfg.Peers}
	}
	rep, err := simulate(context.Background(), cfg, ft, nil, opts)
	if err != nil {
		t.Fatalf("simulate: %v", err)
	}
	if len(rep.Rounds) != cfg.Rounds {
		t.Fatalf("%d rounds reported, want %d", len(rep.Rounds), cfg.Rounds)
	}
	return rep
}

// withoutWallTimes zeroes what legitimately varies between identical runs.
func withoutWallTimes(r *Report) Report {
	c := *r
	c.WallSeconds = 0
	c.Rounds = append([]RoundReport(nil), r.Rounds...)
	for i := range c.Rounds {
		c.Rounds[i].WallMs = 0
	}
	return c
}

func TestSameSeedSameReport(t *testing.T) {
	for _, net := range []string{"ideal", "lossy"} {
		t.Run(net, func(t *testing.T) {
			cfg := testConfig()
			cfg.Net, cfg.Crash = net, 0.2
			a := run(t, cfg, nil, simOptions{})
			cfg.Workers = 5 // the pool's size changes wall time only
			b := run(t, cfg, nil, simOptions{})
			bc := b.Config.(Config)
			bc.Workers = a.Config.(Config).Workers
			b.Config = bc
			if !reflect.DeepEqual(withoutWallTimes(a), withoutWallTimes(b)) {
				t.Fatalf("same seed, different reports:\n%+v\n%+v", a.Rounds, b.Rounds)
			}
			if a.Model.Hash == "" || len(a.Model.Hash) != 64 {
				t.Fatalf("model hash %q", a.Model.Hash)
			}
			cfg.Seed = 2
			c := run(t, cfg, nil, simOptions{})
			if c.Model.Hash == a.Model.Hash {
				t.Fatal("different seeds, same model hash")
			}
		})
	}
}

func TestReportContents(t *testing.T) {
	cfg := testConfig()
	var seen []uint64
	ft := &fakeTask{clients: cfg.Peers}
	rep, err := Simulate(context.Background(), cfg, ft, func(r RoundReport, total int) {
		if total != cfg.Rounds {
			t.Errorf("observer told total %d, want %d", total, cfg.Rounds)
		}
		seen = append(seen, r.Round)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seen, []uint64{1, 2, 3, 4}) {
		t.Fatalf("observer saw rounds %v", seen)
	}
	if rep.Scenario != "fake" || rep.Seed != 1 || rep.Config != cfg || rep.Model.Name != "int64 counter" || rep.Model.Params != 1 {
		t.Fatalf("report header %+v", rep)
	}
	var up, down int64
	best := 0.0
	for i, r := range rep.Rounds {
		if r.Round != uint64(i+1) || r.Selected != 5 || r.Accepted != 5 || r.Rejected != 0 {
			t.Fatalf("round %+v", r)
		}
		if r.BytesUp <= 0 || r.BytesDown <= 0 || r.SimMs <= 0 || r.WallMs < 0 || len(r.ModelHash) != 64 {
			t.Fatalf("round %+v", r)
		}
		// Ideal network: quorum of all 5 closes the round right after the
		// slowest training (2 ms + 0.1 ms per example; at most 16 examples).
		if r.SimMs > 5 {
			t.Errorf("round %d took %.3f simulated ms on the ideal network", r.Round, r.SimMs)
		}
		up += r.BytesUp
		down += r.BytesDown
		best = max(best, r.Accuracy)
	}
	last := rep.Rounds[len(rep.Rounds)-1]
	if rep.BytesUpTotal != up || rep.BytesDownTotal != down || rep.FinalAccuracy != last.Accuracy ||
		rep.BestAccuracy != best || rep.Model.Hash != last.ModelHash || rep.WallSeconds <= 0 {
		t.Fatalf("report totals %+v", rep)
	}
	// Only the selected trainers trained.
	if n := ft.trains.Load(); n != int64(cfg.PerRound*cfg.Rounds) {
		t.Fatalf("%d trainings, want %d", n, cfg.PerRound*cfg.Rounds)
	}
}

func TestSlowAndLossyNetworksFinish(t *testing.T) {
	ideal := run(t, testConfig(), &fakeTask{clients: 20, modelSize: 600_000}, simOptions{})
	for _, net := range []string{"lan", "wan", "lossy"} {
		t.Run(net, func(t *testing.T) {
			cfg := testConfig()
			cfg.Net, cfg.Rounds = net, 6
			rep := run(t, cfg, &fakeTask{clients: cfg.Peers, modelSize: 600_000}, simOptions{})
			for _, r := range rep.Rounds {
				if r.Accepted == 0 {
					t.Errorf("round %d accepted nothing", r.Round)
				}
				if r.SimMs <= ideal.Rounds[0].SimMs {
					t.Errorf("round %d: %.3f ms, not slower than ideal's %.3f ms", r.Round, r.SimMs, ideal.Rounds[0].SimMs)
				}
			}
			if net == "wan" {
				// 5 copies of a 600 kB model at 50 Mbit/s take at least 96 ms each.
				for _, r := range rep.Rounds {
					if r.SimMs < 96 || r.Accepted != 5 {
						t.Errorf("wan round %+v", r)
					}
				}
			}
		})
	}
}

func TestCrashesStillFinish(t *testing.T) {
	cfg := testConfig()
	cfg.Crash, cfg.Rounds, cfg.Quorum = 0.3, 8, 1
	rep := run(t, cfg, nil, simOptions{})
	short := 0
	for _, r := range rep.Rounds {
		if r.Accepted < r.Selected {
			short++
			// Waiting for every selected peer: a round with a crash ends at its
			// deadline (machines see whole milliseconds: up to 1 ms early).
			if d := float64(cfg.RoundTimeoutMs) - r.SimMs; d < 0 || d >= 1 {
				t.Errorf("round %d with crashes took %.3f ms, want the deadline", r.Round, r.SimMs)
			}
		}
	}
	if short == 0 {
		t.Fatal("crash 0.3 over 40 selections crashed nobody")
	}
}

func TestInvalidPayloadsAreRejected(t *testing.T) {
	cfg := testConfig()
	cfg.Rounds = 6
	garbage := map[int]bool{}
	for c := 0; c < cfg.Peers; c += 2 {
		garbage[c] = true
	}
	rep := run(t, cfg, &fakeTask{clients: cfg.Peers, garbage: garbage, fail: map[int]bool{1: true}}, simOptions{})
	rejected := 0
	for _, r := range rep.Rounds {
		rejected += r.Rejected
		if r.Accepted+r.Rejected > r.Selected {
			t.Fatalf("round %+v", r)
		}
	}
	if rejected == 0 {
		t.Fatal("no rejections from peers sending garbage")
	}
}

func TestUndecodableMessagesAreDropped(t *testing.T) {
	cfg := testConfig()
	corrupt := func(from, to string, b []byte) []byte {
		if from == "peer-0003" || to == "peer-0004" {
			return bytes.Repeat([]byte{0xff}, len(b)) // not protobuf
		}
		return b
	}
	rep := run(t, cfg, nil, simOptions{corrupt: corrupt})
	rejected := 0
	for _, r := range rep.Rounds {
		rejected += r.Rejected
	}
	if rejected == 0 {
		t.Fatal("undecodable messages not counted")
	}
}

func TestCancel(t *testing.T) {
	cfg := testConfig()
	cfg.Rounds = 1000
	ft := &fakeTask{clients: cfg.Peers, delay: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt time.Time
	rep, err := Simulate(ctx, cfg, ft, func(r RoundReport, _ int) {
		if r.Round == 2 {
			cancelledAt = time.Now()
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(cancelledAt); d > 2*time.Second {
		t.Fatalf("returned %v after cancel", d)
	}
	if rep == nil || len(rep.Rounds) < 2 || len(rep.Rounds) > 4 {
		t.Fatalf("partial report: %v", rep)
	}
}

func TestSimulateRejectsBadConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Peers = 21 // the task has 20 clients
	_, err := Simulate(context.Background(), cfg, &fakeTask{clients: 20}, nil)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "peers" {
		t.Fatalf("err = %v, want a ConfigError for peers", err)
	}
}

func TestValidate(t *testing.T) {
	good := testConfig()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		field string
		edit  func(*Config)
	}{
		{"peers", func(c *Config) { c.Peers = 0 }},
		{"per_round", func(c *Config) { c.PerRound = 0 }},
		{"per_round", func(c *Config) { c.PerRound = 21 }},
		{"rounds", func(c *Config) { c.Rounds = 0 }},
		{"attackers", func(c *Config) { c.Attackers = 0.5 }},
		{"attackers", func(c *Config) { c.Attackers = -0.1 }},
		{"crash", func(c *Config) { c.Crash = 1 }},
		{"crash", func(c *Config) { c.Crash = -1 }},
		{"quorum", func(c *Config) { c.Quorum = 0 }},
		{"quorum", func(c *Config) { c.Quorum = 1.01 }},
		{"net", func(c *Config) { c.Net = "carrier-pigeon" }},
		{"net", func(c *Config) { c.Net = "" }},
		{"workers", func(c *Config) { c.Workers = -1 }},
		{"round_timeout_ms", func(c *Config) { c.RoundTimeoutMs = 0 }},
	}
	for _, tc := range tests {
		c := good
		tc.edit(&c)
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: Validate() = %v", tc.field, err)
		}
	}
	if err := (&Config{Peers: 1, PerRound: 1, Rounds: 1, Quorum: 1, Net: "ideal", RoundTimeoutMs: 1, Attackers: nan()}).Validate(); err == nil {
		t.Error("NaN attackers accepted")
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestNetProfiles(t *testing.T) {
	var names []string
	for _, p := range NetProfiles() {
		names = append(names, p.Name)
		if p.Description == "" {
			t.Errorf("%s has no description", p.Name)
		}
	}
	if got := strings.Join(names, ","); got != "ideal,lan,wan,lossy" {
		t.Fatalf("profiles %s", got)
	}
}

func TestLinkModel(t *testing.T) {
	p, _ := lookupNet("wan")
	p.jitterNs = 0
	nw := network{p: p, rng: &splitmix.Source{State: 1}}
	agg := link{up: p.aggUp, down: p.aggDown}
	const model = 600_000
	var last int64
	for i := 0; i < 25; i++ {
		peer := link{up: p.peerUp, down: p.peerDown}
		at, ok := nw.send(0, &agg, &peer, model)
		if !ok {
			t.Fatal("lost on a lossless profile")
		}
		// Each copy: queued behind i copies on the aggregator's 1 Gbit/s (4.8 ms
		// each), 40 ms away, and 96 ms on the peer's 50 Mbit/s downlink.
		want := int64(i)*4_800_000 + 40*ms + 96*ms
		if at != want {
			t.Fatalf("copy %d arrives at %d ns, want %d", i, at, want)
		}
		last = at
	}
	if last < 25*4_800_000 {
		t.Fatal("broadcast took no time on the sender's link")
	}
	// Upload from a peer: its 10 Mbit/s uplink is the bottleneck.
	peer := link{up: p.peerUp, down: p.peerDown}
	at, _ := nw.send(0, &peer, &agg, model)
	if want := 480*ms + 40*ms; at != want {
		t.Fatalf("upload arrives at %d, want %d", at, want)
	}
}
