package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/daemon"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/task"
)

// TestE2EFRLLoRA runs a frl-lora-mnist federation (rank-vote fine-tuning:
// trainers rank the edges of rank-8 supermask adapters on lora-mnist's
// pre-trained base, bucket-mask:16 rankings, vote-clamp) of three daemon
// processes, an aggregator and two trainers, for three rounds. Every round
// merges both updates, every peer ends with the aggregator's model hash for
// every round, and those models are, bit for bit, the ones the genesis's
// task computes in this process from the trainers' shards (and so is the
// accuracy the aggregator reports); the model beats the base; the exported
// round-3 model scores what the aggregator measured. Before the run, a
// trainer configured with its own adapter rank (`[train] rank`) is refused.
func TestE2EFRLLoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; the race run skips it")
	}
	c := newE2ECluster(t, 3, 100)
	c.genesis("--scenario", "frl-lora-mnist", "--rank", "8", "--rounds", "3", "--per-round", "2", "--quorum", "2",
		"--round-timeout", "60s", "--retry", "300ms")
	g, _, err := genesis.Load(c.gen)
	if err != nil {
		t.Fatal(err)
	}
	if g.Task.RankingCodec != task.DefaultRankingCodec || g.AggregatorName != "vote-clamp" || g.Task.Rank != 8 {
		t.Fatalf("genesis codec %q, aggregation %q, rank %d", g.Task.RankingCodec, g.AggregatorName, g.Task.Rank)
	}

	// A trainer with its own adapter rank does not start.
	editConfig(t, c.homes[2], func(cfg *daemon.Config) { cfg.Train.Rank = 4 })
	c.start(2)
	c.waitExit(2, 60*time.Second)
	if c.procs[2].err == nil || !strings.Contains(c.log(2), "cannot be voted") {
		t.Fatalf("a frl-lora-mnist trainer with train.rank 4: %v; log:\n%s", c.procs[2].err, c.log(2))
	}
	editConfig(t, c.homes[2], func(cfg *daemon.Config) { cfg.Train.Rank = 0 })

	start := time.Now()
	want := c.runAll(3, "")
	t.Logf("3 rounds in %v", time.Since(start))
	agg, err := c.status(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(agg.Rounds) != 3 {
		t.Fatalf("the aggregator reports %d rounds, want 3", len(agg.Rounds))
	}
	for _, r := range agg.Rounds {
		if r.Accepted != 2 {
			t.Errorf("round %d: %d updates merged, want 2", r.Round, r.Accepted)
		}
	}

	// The rounds again, in this process, from the genesis and the
	// trainers' shards: the daemons computed exactly these models.
	test, err := data.LoadTestSet(filepath.Join(c.dir, "shards", "test"))
	if err != nil {
		t.Fatal(err)
	}
	testIn, err := model.NewInputs(test, data.MNISTMean, data.MNISTStd)
	if err != nil {
		t.Fatal(err)
	}
	aggTask, err := g.BuildTask(task.Data{Test: testIn})
	if err != nil {
		t.Fatal(err)
	}
	trainers := make([]task.Task, 3)
	for i := 1; i <= 2; i++ {
		set, err := data.LoadShard(filepath.Join(c.dir, "shards", fmt.Sprintf("peer-%03d", i-1)))
		if err != nil {
			t.Fatal(err)
		}
		in, err := model.NewInputs(set, data.MNISTMean, data.MNISTStd)
		if err != nil {
			t.Fatal(err)
		}
		all := make([]int, set.N)
		for k := range all {
			all[k] = k
		}
		if trainers[i], err = g.BuildTask(task.Data{Train: in, Parts: data.Partition{all}}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := aggTask.InitialModel()
	if err != nil {
		t.Fatal(err)
	}
	packed := aggTask.(*task.FRL).Spec().FRLUpdateSize()
	for r := uint64(1); r <= 3; r++ {
		var ups []aggregate.Update
		for i := 1; i <= 2; i++ {
			p, err := trainers[i].Train(task.Job{Client: 0, Round: r, Model: m, Seed: daemon.TrainSeed(g.Seed, r, c.ids[i])})
			if err != nil {
				t.Fatal(err)
			}
			if len(p) >= packed {
				t.Errorf("round %d: trainer %d's update of %d bytes is not smaller than a packed one (%d): not bucket-mask coded", r, i, len(p), packed)
			}
			ups = append(ups, aggregate.Update{Peer: c.ids[i], Samples: int64(trainers[i].ClientSamples(0)), Payload: p})
		}
		// Either order of arrival gives the same model.
		var next []byte
		for _, order := range [][]int{{0, 1}, {1, 0}} {
			a, err := aggTask.NewAggregator(g.AggregatorName)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Begin(r, m); err != nil {
				t.Fatal(err)
			}
			for _, k := range order {
				if err := a.Add(ups[k]); err != nil {
					t.Fatal(err)
				}
			}
			got, err := a.Finalize()
			if err != nil {
				t.Fatal(err)
			}
			if next != nil && !slices.Equal(got, next) {
				t.Fatalf("round %d: the vote depends on the order of the updates", r)
			}
			next = got
		}
		m = next
		if h := hex.EncodeToString(node.Hash(m)); h != want[r-1] {
			t.Errorf("round %d: the daemons' model %s, the genesis's task computes %s", r, want[r-1], h)
		}
		ev, err := aggTask.Evaluate(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := agg.Rounds[r-1].Accuracy; got != ev.Accuracy {
			t.Errorf("round %d: the aggregator measured accuracy %.4f, the replay %.4f", r, got, ev.Accuracy)
		}
	}

	// Better than the base it fine-tunes (about 0.51: it knows digits 0-4).
	line := c.cli("evaluate", "--model", filepath.Join(c.dir, baseModelFile), "--data", filepath.Join(c.dir, "shards", "test"))
	var baseAcc float64
	if _, err := fmt.Sscanf(line, "accuracy %f", &baseAcc); err != nil {
		t.Fatalf("evaluate printed %q: %v", line, err)
	}
	final := agg.Rounds[2].Accuracy
	t.Logf("accuracy: base %.4f, rounds %.4f %.4f %.4f", baseAcc, agg.Rounds[0].Accuracy, agg.Rounds[1].Accuracy, final)
	if baseAcc < 0.45 || baseAcc > 0.55 || final < baseAcc+0.15 {
		t.Errorf("frl-lora-mnist after 3 rounds: accuracy %.4f, base %.4f; want the base near 0.5 and 0.15 above it", final, baseAcc)
	}

	// The exported model (the base with the voted adapters merged) scores
	// what the aggregator measured.
	out := filepath.Join(c.dir, "frl-lora-round3.safetensors")
	c.cli("export", "--home", c.homes[0], "--round", "3", "--out", out)
	for i := range c.homes {
		c.stop(i)
	}
	line = c.cli("evaluate", "--model", out, "--data", filepath.Join(c.dir, "shards", "test"))
	var acc float64
	if _, err := fmt.Sscanf(line, "accuracy %f", &acc); err != nil {
		t.Fatalf("evaluate printed %q: %v", line, err)
	}
	if fmt.Sprintf("%.4f", acc) != fmt.Sprintf("%.4f", final) {
		t.Errorf("the exported model scores %.4f, the aggregator's evaluation of round 3 %.4f", acc, final)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sizes, _, meta, err := model.DecodeDenseSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sizes, []int{784, 300, 100, 10}) || meta["fedrank.scenario"] != "frl-lora-mnist" || meta["fedrank.round"] != strconv.Itoa(3) {
		t.Errorf("exported sizes %v, metadata %v", sizes, meta)
	}
}
