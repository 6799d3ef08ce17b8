package rankvote

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// Benchmarks report throughput and, where it helps to read the number on a
// shared or slower machine, a ratio to a simple baseline timed in the same run.

var benchRankings = map[int][][]uint32{} // per layer size: distinct random rankings

// rankingsFor returns count distinct random rankings of n edges, generated once.
func rankingsFor(n, count int) [][]uint32 {
	rs := benchRankings[n]
	rng := newRand(uint64(n))
	for len(rs) < count {
		rs = append(rs, randPerm(rng, n))
	}
	benchRankings[n] = rs
	return rs[:count]
}

// BenchmarkVote times one full round of the vote: Reset, Add of every voter,
// Result of every layer. The voters' rankings are random permutations made
// before the timer; at most 25 are distinct (voter k uses ranking k mod 25),
// which for 5M edges is 500 MB, more than the last-level cache, so reuse does
// not flatter the 100-voter numbers. x_plain_sum is the round's time over that
// of a plain sequential sum over the same memory (clear the sums, then
// sums[i] += r[i] for every voter and layer), timed in the same iterations.
func BenchmarkVote(b *testing.B) {
	models := []struct {
		name  string
		sizes []int
	}{
		{"edges=266200", []int{235200, 30000, 1000}}, // LeNet-300-100: 784x300, 300x100, 100x10
		{"edges=5000000", []int{5000000}},
	}
	for _, m := range models {
		for _, voters := range []int{25, 100} {
			b.Run(fmt.Sprintf("voters=%d/%s", voters, m.name), func(b *testing.B) {
				benchVote(b, m.sizes, voters)
			})
		}
	}
}

func benchVote(b *testing.B, sizes []int, voters int) {
	distinct := min(voters, 25)
	perLayer := make([][][]uint32, len(sizes))
	edges := 0
	for l, n := range sizes {
		perLayer[l] = rankingsFor(n, distinct)
		edges += n
	}
	uploads := make([][][]uint32, distinct)
	for k := range uploads {
		uploads[k] = make([][]uint32, len(sizes))
		for l := range sizes {
			uploads[k][l] = perLayer[l][k]
		}
	}
	v := NewVote(sizes)
	orders := make([][]uint32, len(sizes))
	plain := make([][]uint32, len(sizes))
	for l, n := range sizes {
		orders[l] = make([]uint32, n)
		plain[l] = make([]uint32, n)
	}
	var voteTime, plainTime time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		v.Reset()
		for k := range voters {
			if err := v.Add(uploads[k%distinct]); err != nil {
				b.Fatal(err)
			}
		}
		for l := range sizes {
			orders[l] = v.Result(l, orders[l])
		}
		voteTime += time.Since(t0)

		b.StopTimer()
		t1 := time.Now()
		for l := range sizes {
			clear(plain[l])
		}
		for k := range voters {
			for l, r := range uploads[k%distinct] {
				sums := plain[l][:len(r)]
				for i, e := range r {
					sums[i] += e
				}
			}
		}
		plainTime += time.Since(t1)
		b.StartTimer()
	}
	b.ReportMetric(float64(voters)*float64(edges)*float64(b.N)/voteTime.Seconds(), "edges/s")
	b.ReportMetric(float64(voteTime)/float64(plainTime), "x_plain_sum")
}

// BenchmarkArgsort sorts scores drawn like the model's initialisation.
// x_stdlib is the time of slices.SortStableFunc on the same data (indices with
// a comparator), timed in the same run, over the Argsort time: the speed-up.
func BenchmarkArgsort(b *testing.B) {
	for _, n := range []int{266200, 5000000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			scores := initScores(newRand(22), n)
			var s Sorter
			order := s.Argsort(scores, nil) // warm
			b.ResetTimer()
			t0 := time.Now()
			for range b.N {
				order = s.Argsort(scores, order)
			}
			radix := time.Since(t0) / time.Duration(b.N)
			b.StopTimer()
			t1 := time.Now()
			std := stableArgsort(n, func(a, b int) int { return cmpF(scores[a], scores[b]) })
			stdTime := time.Since(t1)
			if !slices.Equal(std, order) {
				b.Fatal("Argsort differs from slices.SortStableFunc")
			}
			b.ReportMetric(float64(n)/radix.Seconds(), "elems/s")
			b.ReportMetric(float64(stdTime)/float64(radix), "x_stdlib")
		})
	}
}

// BenchmarkArgsortDigits compares the 11-bit digits (3 passes) Argsort uses
// with 8-bit digits (4 passes), the other usual choice: each iteration runs
// both, ns/op is the 11-bit time and x_bits8 the 8-bit time over it.
func BenchmarkArgsortDigits(b *testing.B) {
	for _, n := range []int{266200, 5000000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			scores := initScores(newRand(23), n)
			var s Sorter
			var s8 sorter8
			order := s.Argsort(scores, nil)
			order8 := s8.argsort(scores, nil)
			if !slices.Equal(order, order8) {
				b.Fatal("8-bit variant differs")
			}
			var t11, t8 time.Duration
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				order = s.Argsort(scores, order)
				t11 += time.Since(t0)
				b.StopTimer()
				t1 := time.Now()
				order8 = s8.argsort(scores, order8)
				t8 += time.Since(t1)
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/t11.Seconds(), "elems/s")
			b.ReportMetric(float64(t8)/float64(t11), "x_bits8")
		})
	}
}

// sorter8 is Argsort with 4 passes of 8-bit digits, kept for BenchmarkArgsortDigits.
type sorter8 struct{ a, b []uint64 }

func (s *sorter8) argsort(scores []float32, order []uint32) []uint32 {
	n := len(scores)
	order = growUint32(order, n)
	s.a, s.b = growUint64(s.a, n), growUint64(s.b, n)
	var h [4][256]uint32
	for _, f := range scores {
		k := FloatKey(f)
		h[0][k&255]++
		h[1][(k>>8)&255]++
		h[2][(k>>16)&255]++
		h[3][k>>24]++
	}
	for p := range h {
		var sum uint32
		for d, c := range h[p] {
			h[p][d] = sum
			sum += c
		}
	}
	a, tmp := s.a, s.b
	for i, f := range scores {
		k := FloatKey(f)
		q := h[0][k&255]
		h[0][k&255]++
		a[q] = uint64(k)<<32 | uint64(i)
	}
	for p := 1; p < 3; p++ {
		sh := 32 + 8*uint(p)
		for _, v := range a {
			d := (v >> sh) & 255
			q := h[p][d]
			h[p][d]++
			tmp[q] = v
		}
		a, tmp = tmp, a
	}
	for _, v := range a {
		d := v >> 56
		q := h[3][d]
		h[3][d]++
		order[q] = uint32(v)
	}
	return order
}

func BenchmarkPack(b *testing.B) {
	for _, n := range []int{235200, 5000000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			r := rankingsFor(n, 1)[0]
			buf := Pack(nil, r, n)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				buf = Pack(buf[:0], r, n)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "indices/s")
			b.ReportMetric(float64(BitsPer(n)), "bits/index")
		})
	}
}

func BenchmarkUnpack(b *testing.B) {
	for _, n := range []int{235200, 5000000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			r := rankingsFor(n, 1)[0]
			buf := Pack(nil, r, n)
			dst := make([]uint32, n)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				var err error
				if dst, err = Unpack(buf, n, dst); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "indices/s")
			b.ReportMetric(float64(BitsPer(n)), "bits/index")
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	for _, n := range []int{235200, 5000000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			r := rankingsFor(n, 1)[0]
			var v Validator
			for range b.N {
				if err := v.Validate(r, n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "indices/s")
		})
	}
}

func BenchmarkMaskFromScores(b *testing.B) {
	for _, n := range []int{235200, 5000000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			scores := initScores(newRand(24), n)
			mask := make([]bool, n)
			keep := KeepCount(n, 0.5)
			for range b.N {
				mask = MaskFromScores(scores, keep, mask)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "elems/s")
		})
	}
}
