package simnet

import (
	"context"
	"testing"

	"github.com/fedrank/fedrank/task"
)

// The delta ranking codec is lossless: a run with it ends at the same model,
// round by round, as the packed run, and its peers send fewer bytes; the
// attacks that decode the attackers' own trained rankings work with it.
func TestDeltaCodecSameModelFewerBytes(t *testing.T) {
	run := func(codec, attack string) *Report {
		tk, cfg := smallCodecRun(t, codec, attack)
		rep, err := simulate(context.Background(), cfg, tk, nil, simOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	for _, attack := range []string{"", task.AttackReverse, task.AttackAdaptive} {
		p, d := run(task.CodecPacked, attack), run(task.CodecDelta, attack)
		for i := range p.Rounds {
			if p.Rounds[i].ModelHash != d.Rounds[i].ModelHash {
				t.Fatalf("attack %q: round %d: delta-coded model %s, packed %s", attack, i+1, d.Rounds[i].ModelHash, p.Rounds[i].ModelHash)
			}
		}
		if attack == "" && !(d.BytesUpTotal < p.BytesUpTotal) {
			t.Errorf("delta-coded peers sent %d bytes, packed %d", d.BytesUpTotal, p.BytesUpTotal)
		}
		t.Logf("attack %q: %d bytes up delta-coded, %d packed", attack, d.BytesUpTotal, p.BytesUpTotal)
	}
	// The lossy codecs: a quantized ranking, far fewer bytes, and a run
	// that still learns.
	for _, codec := range []string{"bucket:8", "bucket-mask:8"} {
		p, b := run(task.CodecPacked, ""), run(codec, "")
		if !(b.BytesUpTotal*2 < p.BytesUpTotal) { // tables weigh on layers this small
			t.Errorf("%s: %d bytes up, packed %d", codec, b.BytesUpTotal, p.BytesUpTotal)
		}
		if b.FinalAccuracy < p.FinalAccuracy-0.15 {
			t.Errorf("%s: final accuracy %.4f, packed %.4f", codec, b.FinalAccuracy, p.FinalAccuracy)
		}
		t.Logf("%s: %d bytes up, accuracy %.4f (packed %d, %.4f)", codec, b.BytesUpTotal, b.FinalAccuracy, p.BytesUpTotal, p.FinalAccuracy)
	}
	if _, _, err := Resolve(Config{Scenario: "frl-mnist", RankingCodec: "bucket-mask:6"}); err == nil {
		t.Error("bucket-mask with a bucket count that is not a multiple of 4 was accepted")
	}
	if _, _, err := Resolve(Config{Scenario: "fedavg-mnist", RankingCodec: "delta"}); err == nil {
		t.Error("a ranking codec for a dense scenario was accepted")
	}
	if _, _, err := Resolve(Config{Scenario: "frl-mnist", RankingCodec: "zip"}); err == nil {
		t.Error("an unknown ranking codec was accepted")
	}
}

// Coded updates decoded on the pool as they are made (aggregate.Predecoder)
// give the run the aggregator's own decoding gives, round by round.
func TestPredecodedRunIsTheSame(t *testing.T) {
	run := func(codec, attack string, noPredecode bool) (*Report, int) {
		tk, cfg := smallCodecRun(t, codec, attack)
		s, err := newSim(context.Background(), cfg, tk, nil, simOptions{noPredecode: noPredecode})
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		if err := s.loop(); err != nil {
			t.Fatal(err)
		}
		hits := 0
		if s.pre != nil {
			hits = s.pre.Hits()
		}
		return s.finish(), hits
	}
	for _, codec := range []string{task.CodecDelta, "bucket-mask:8"} {
		for _, attack := range []string{"", task.AttackReverse} {
			a, _ := run(codec, attack, true)
			b, hits := run(codec, attack, false)
			if hits == 0 {
				t.Errorf("%s %q: no update was taken predecoded", codec, attack)
			}
			for i := range a.Rounds {
				if a.Rounds[i].ModelHash != b.Rounds[i].ModelHash || a.Rounds[i].BytesUp != b.Rounds[i].BytesUp {
					t.Fatalf("%s %q: round %d differs with predecoding", codec, attack, i+1)
				}
			}
			t.Logf("%s %q: %d updates predecoded", codec, attack, hits)
		}
	}
}

// smallCodecRun is the small FRL task with the given ranking codec and a
// 4-round vote-clamp config, with 20% attackers running attack ("": none).
func smallCodecRun(t *testing.T, codec, attack string) (*task.FRL, Config) {
	t.Helper()
	fc := task.DefaultFRL(3)
	fc.Name, fc.Sizes, fc.Codec = "frl-small", []int{16, 32, 3}, codec
	tk, err := task.NewFRL(fc, smallData(t, 20))
	if err != nil {
		t.Fatal(err)
	}
	cfg := attackConfig(attack, 0.2)
	if attack == "" {
		cfg.Attackers = 0
	}
	cfg.Aggregator, cfg.Rounds = "vote-clamp", 4
	return tk, cfg
}
