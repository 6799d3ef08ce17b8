package storage

import "testing"

// The benchmarks write what an aggregator writes in an FRL round on MNIST:
// 600 KB updates (a packed ranking of 266,200 edges), 25 a round, on disk.

var benchProfiles = []struct {
	name string
	opt  Options
}{
	{"default", Options{}},
	{"lowmem", Options{LowMemory: true}},
}

const (
	benchPayload  = 600 << 10
	benchPerRound = 25
	benchModel    = 1 << 20
)

func reportMBs(b *testing.B, bytes int64) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(bytes)/1e6/s, "MB/s")
	}
}

// BenchmarkAddUpdate: one op is one durable AddUpdate (its sync included).
func BenchmarkAddUpdate(b *testing.B) {
	for _, p := range benchProfiles {
		b.Run(p.name, func(b *testing.B) {
			s := openTest(b, b.TempDir(), p.opt)
			payloads := make([]Update, benchPerRound)
			for i := range payloads {
				payloads[i] = newUpdate(0, i, benchPayload)
			}
			round, seq := uint64(1), 0
			must(b, s.Open(OpenRound{Round: 1}))
			var written int64
			for b.Loop() {
				if seq == benchPerRound {
					b.StopTimer()
					must(b, s.Commit(Commit{Result: Result{Round: round, ModelHash: hashOf(nil)}, Model: []byte{},
						Next: &OpenRound{Round: round + 1}}))
					round, seq = round+1, 0
					b.StartTimer()
				}
				u := payloads[seq]
				u.Round, u.Seq = round, seq
				must(b, s.AddUpdate(u))
				written += int64(len(u.Payload))
				seq++
			}
			reportMBs(b, written)
		})
	}
}

// BenchmarkCommit: one op is the commit of a round of 25 updates with a new
// 1 MiB model: the model's chunks, the result, the next round and the
// deletion of the round's 25 updates. MB/s counts the model.
func BenchmarkCommit(b *testing.B) {
	for _, p := range benchProfiles {
		b.Run(p.name, func(b *testing.B) {
			s := openTest(b, b.TempDir(), p.opt)
			must(b, s.Open(OpenRound{Round: 1}))
			round := uint64(1)
			var written int64
			for b.Loop() {
				b.StopTimer()
				for seq := range benchPerRound {
					u := newUpdate(round, seq, benchPayload)
					must(b, s.AddUpdate(u))
				}
				model := blob(round, benchModel)
				c := Commit{Result: Result{Round: round, ModelHash: hashOf(model)}, Model: model,
					Next: &OpenRound{Round: round + 1}}
				b.StartTimer()
				must(b, s.Commit(c))
				written += int64(len(model))
				round++
			}
			reportMBs(b, written)
		})
	}
}
