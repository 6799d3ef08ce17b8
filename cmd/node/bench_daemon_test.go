package main

import (
	"io"
	"net/http"
	"path/filepath"

	"bufio"
	"context"
	"fmt"
	"github.com/fedrank/fedrank/daemon"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedrank/fedrank/simnet"
)

// BenchmarkLoopbackRound runs the reference FRL round with real daemons:
// an aggregator and 25 trainer processes on 127.0.0.1 (each with a 60-image
// shard of an IID split of MNIST into 1000, a low-memory Badger store, all
// 25 selected every round, quorum 25, vote-robust), and the same round in
// the simulator (1000 simulated peers, 25 selected, 60 images each), in
// the same run. It reports the aggregator's round time (announcement to
// commit, rounds 2.. only: round 1 includes start-up), the simulator's wall
// time per round, their ratio, and the peak RSS (VmHWM) of the trainer and
// aggregator processes.
//
//	go test -run x -bench LoopbackRound -benchtime 5x ./cmd/node/
func BenchmarkLoopbackRound(b *testing.B) {
	const trainers = 25
	rounds := max(b.N, 3) + 1
	c := newE2ECluster(b, trainers+1, 1000)
	// Packed rankings on both sides, as when BENCHMARKS.md's figures were
	// measured (frl-mnist's default is now bucket-mask:16).
	c.genesis("--scenario", "frl-mnist", "--rounds", strconv.Itoa(rounds), "--per-round", strconv.Itoa(trainers),
		"--quorum", strconv.Itoa(trainers), "--round-timeout", "120s", "--retry", "2s", "--ranking-codec", "packed")
	// The aggregator evaluates nothing: both sides time training, transfer and the vote.
	for i := range c.homes {
		c.start(i)
	}
	c.waitRound(rounds, 10*time.Minute, 0)
	s, err := c.status(0)
	if err != nil {
		b.Fatal(err)
	}
	var rss []float64
	for i := 1; i <= trainers; i++ {
		rss = append(rss, vmHWM(b, c.procs[i].cmd.Process.Pid))
	}
	aggRSS := vmHWM(b, c.procs[0].cmd.Process.Pid)
	for i := range c.homes {
		c.stop(i)
	}
	var loop []float64
	for _, r := range s.Rounds[1:] {
		loop = append(loop, r.SimMs/1000) // closed_ms - started_ms on the aggregator's clock
	}

	rep, err := simnet.Run(context.Background(), simnet.Config{Scenario: "frl-mnist", Peers: 1000, PerRound: trainers,
		Partition: "iid", Rounds: rounds, Seed: 1, RankingCodec: "packed"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var sim []float64
	for _, r := range rep.Rounds[1:] {
		sim = append(sim, r.WallMs/1000)
	}
	slices.Sort(rss)
	b.ReportMetric(mean(loop), "loopback-s/round")
	b.ReportMetric(mean(sim), "sim-s/round")
	b.ReportMetric(mean(loop)/mean(sim), "loopback/sim")
	b.ReportMetric(rss[len(rss)-1], "trainer-peak-MiB")
	b.ReportMetric(rss[len(rss)/2], "trainer-median-MiB")
	b.ReportMetric(aggRSS, "aggregator-peak-MiB")
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// procStatusMiB is a kB field of /proc/PID/status in MiB, 0 if unreadable
// (the process has exited).
func procStatusMiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}

// vmHWM is a process's peak resident set size in MiB (Linux).
func vmHWM(tb testing.TB, pid int) float64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb / 1024
		}
	}
	tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// BenchmarkEdgeTrainerMemory measures what a small board needs: the peak
// RSS (VmHWM, which includes the mapped pages of the binary and of
// Badger's logs, which the kernel can reclaim) and the peak anonymous RSS
// (sampled every 10 ms) of trainer daemons running the edge profile (`profile =
// "edge"`: Badger's small-memory options, libp2p's resource manager at 64
// MiB, a soft Go memory limit) through rounds of each task, with an
// aggregator of the default profile on the same loopback. Per task: the
// largest and the median trainer peak, and the aggregator's.
//
//	go test -run x -bench EdgeTrainerMemory -benchtime 1x ./cmd/node/
func BenchmarkEdgeTrainerMemory(b *testing.B) {
	const trainers, rounds = 4, 4
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"frl-mnist", []string{"--scenario", "frl-mnist"}},
		{"lora-mnist-rank4", []string{"--scenario", "lora-mnist", "--rank", "4"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				c := newE2ECluster(b, trainers+1, 100)
				for i := 1; i <= trainers; i++ {
					setProfile(b, c.homes[i], "edge")
				}
				c.genesis(append(tc.args, "--rounds", strconv.Itoa(rounds), "--per-round", strconv.Itoa(trainers),
					"--quorum", strconv.Itoa(trainers), "--round-timeout", "120s", "--retry", "2s")...)
				for i := range c.homes {
					c.start(i)
				}
				// The anonymous part of the resident set (Go's heap and
				// runtime, what the kernel cannot drop) has no peak in
				// /proc: sample it.
				stop := make(chan struct{})
				anon := make([]float64, trainers+1)
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					for {
						for i := 1; i <= trainers; i++ {
							anon[i] = max(anon[i], procStatusMiB(c.procs[i].cmd.Process.Pid, "RssAnon:"))
						}
						select {
						case <-stop:
							return
						case <-time.After(10 * time.Millisecond):
						}
					}
				}()
				c.waitRound(rounds, 10*time.Minute, c.all()...)
				close(stop)
				<-sampled
				var rss []float64
				for i := 1; i <= trainers; i++ {
					rss = append(rss, vmHWM(b, c.procs[i].cmd.Process.Pid))
				}
				agg := vmHWM(b, c.procs[0].cmd.Process.Pid)
				if dir := os.Getenv("FEDRANK_BENCH_HEAP_DIR"); dir != "" {
					saveHeapProfile(b, c, 1, filepath.Join(dir, tc.name+".heap"))
				}
				for i := range c.homes {
					c.stop(i)
				}
				slices.Sort(rss)
				b.ReportMetric(rss[len(rss)-1], "trainer-peak-MiB")
				b.ReportMetric(rss[len(rss)/2], "trainer-median-MiB")
				b.ReportMetric(slices.Max(anon), "trainer-peak-anon-MiB")
				b.ReportMetric(agg, "aggregator-peak-MiB")
			}
		})
	}
}

// saveHeapProfile writes peer i's heap profile (its API's /debug/pprof/heap)
// to path, for `go tool pprof`.
func saveHeapProfile(tb testing.TB, c *e2eCluster, i int, path string) {
	tb.Helper()
	api, err := os.ReadFile(filepath.Join(c.homes[i], daemon.APIFile))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.Get(strings.TrimSpace(string(api)) + "/debug/pprof/heap")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("heap profile: %v, status %s", err, resp.Status)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		tb.Fatal(err)
	}
}
