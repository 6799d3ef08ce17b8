package rankvote

import (
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func addAll(t *testing.T, v *TrimmedVote, voters ...[][]uint32) {
	t.Helper()
	for _, vr := range voters {
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrimmedVoteHandComputed(t *testing.T) {
	// Three honest voters and two attackers sending the reverse of the honest
	// collective ranking, 5 edges. Positions (edge: position):
	//   h1 [2 4 1 0 3]: e0 3, e1 2, e2 0, e3 4, e4 1
	//   h2 [4 2 0 3 1]: e0 2, e1 4, e2 1, e3 3, e4 0
	//   h3 [2 0 4 3 1]: e0 1, e1 4, e2 0, e3 3, e4 2
	// Honest sums e0 6, e1 10, e2 1, e3 10, e4 3: collective [2 4 0 1 3].
	//   a1 = a2 = its reverse [3 1 0 4 2]: e0 2, e1 1, e2 4, e3 0, e4 3
	// Per edge, sorted positions | full sum | median | trim-1 sum:
	//   e0 1 2 2 2 3 | 10 | 2 | 6
	//   e1 1 1 2 4 4 | 12 | 2 | 7
	//   e2 0 0 1 4 4 |  9 | 1 | 5
	//   e3 0 0 3 3 4 | 10 | 3 | 6
	//   e4 0 1 2 3 3 |  9 | 2 | 6
	// Borda (frac 0):     e2 9, e4 9, e0 10, e3 10, e1 12 -> [2 4 0 3 1]: e3 jumped e1.
	// Median (frac 0.5):  e2 1; e4, e0, e1 at 2 by full sum 9, 10, 12; e3 3
	//                     -> [2 4 0 1 3], the honest order.
	// Trim 1 (frac 0.2):  e2 5; e4, e0, e3 at 6 by full sum 9, 10, 10 (index); e1 7
	//                     -> [2 4 0 3 1].
	rev := []uint32{3, 1, 0, 4, 2}
	voters := [][][]uint32{{{2, 4, 1, 0, 3}}, {{4, 2, 0, 3, 1}}, {{2, 0, 4, 3, 1}}, {rev}, {rev}}
	for _, tc := range []struct {
		frac float64
		trim int
		want []uint32
	}{
		{0, 0, []uint32{2, 4, 0, 3, 1}},
		{0.2, 1, []uint32{2, 4, 0, 3, 1}},
		{0.5, 2, []uint32{2, 4, 0, 1, 3}},
	} {
		v := NewTrimmedVote([]int{5}, tc.frac)
		addAll(t, v, voters...)
		if v.Trim() != tc.trim {
			t.Errorf("frac %v: trim %d, want %d", tc.frac, v.Trim(), tc.trim)
		}
		if got := v.Result(0, nil); !slices.Equal(got, tc.want) {
			t.Errorf("frac %v: result %v, want %v", tc.frac, got, tc.want)
		}
	}
}

func TestTrimmedVoteTies(t *testing.T) {
	// Two voters in exact opposition: every trimmed and full sum is 3, so the
	// order is by edge index. The median of an even count keeps both middles.
	for _, frac := range []float64{0, 0.5} {
		v := NewTrimmedVote([]int{4}, frac)
		addAll(t, v, [][]uint32{{2, 0, 3, 1}}, [][]uint32{{1, 3, 0, 2}})
		if got := v.Result(0, nil); !slices.Equal(got, []uint32{0, 1, 2, 3}) {
			t.Errorf("frac %v: opposed voters gave %v, want index order", frac, got)
		}
	}
	// Three voters, median: medians e0 1, e1 1, e2 1 (tied), full sums 3, 2, 4
	// (positions e0 0 1 2, e1 1 0 1, e2 2 2 0) -> [1 0 2].
	v := NewTrimmedVote([]int{3}, 0.5)
	addAll(t, v, [][]uint32{{0, 1, 2}}, [][]uint32{{1, 0, 2}}, [][]uint32{{2, 1, 0}})
	if got := v.Result(0, nil); !slices.Equal(got, []uint32{1, 0, 2}) {
		t.Errorf("tied medians: %v, want [1 0 2] (by full sum)", got)
	}
}

func TestTrimmedVoteSingleAndIdenticalVoters(t *testing.T) {
	rng := newRand(31)
	sizes := []int{1, 2, 1000, 257}
	r := make([][]uint32, len(sizes))
	for l, n := range sizes {
		r[l] = randPerm(rng, n)
	}
	for _, frac := range []float64{0, 0.2, 0.5} {
		v := NewTrimmedVote(sizes, frac)
		for voters := 1; voters <= 7; voters++ {
			addAll(t, v, r)
			for l := range sizes {
				if got := v.Result(l, nil); !slices.Equal(got, r[l]) {
					t.Fatalf("frac %v, %d identical voters: layer %d is not their ranking", frac, voters, l)
				}
			}
		}
	}
	v := NewTrimmedVote([]int{5}, 0.5)
	if got := v.Result(0, nil); !slices.Equal(got, []uint32{0, 1, 2, 3, 4}) {
		t.Errorf("no voters: %v, want the identity", got)
	}
}

// naiveTrimmed is the reference: per edge, positions sorted with the slices
// package, the trim lowest and highest dropped; edges stably sorted by
// (trimmed sum, full sum).
func naiveTrimmed(sizes []int, voters [][][]uint32, frac float64) [][]uint32 {
	out := make([][]uint32, len(sizes))
	trim := TrimCount(len(voters), frac)
	for l, n := range sizes {
		pos := make([][]uint64, n)
		for _, vr := range voters {
			for i, e := range vr[l] {
				pos[e] = append(pos[e], uint64(i))
			}
		}
		trimmed, full := make([]uint64, n), make([]uint64, n)
		for e, p := range pos {
			slices.Sort(p)
			for i, x := range p {
				full[e] += x
				if i >= trim && i < len(p)-trim {
					trimmed[e] += x
				}
			}
		}
		out[l] = stableArgsort(n, func(a, b int) int {
			return cmp.Or(cmp.Compare(trimmed[a], trimmed[b]), cmp.Compare(full[a], full[b]))
		})
	}
	return out
}

func TestTrimmedVoteMatchesNaive(t *testing.T) {
	rng := newRand(32)
	sizes := []int{3000, 0, 1, 17, 500}
	for _, count := range []int{1, 2, 5, 8, 25, 40} { // 40 voters: the pdqsort path
		voters := randVoters(rng, sizes, count)
		for k := range voters[:count/2] { // correlated voters: many ties
			voters[k][3] = voters[0][3]
		}
		for _, frac := range []float64{0, 0.1, 0.2, 0.5} {
			v := NewTrimmedVote(sizes, frac)
			addAll(t, v, voters...)
			want := naiveTrimmed(sizes, voters, frac)
			for l := range sizes {
				if got := v.Result(l, nil); !slices.Equal(got, want[l]) {
					t.Fatalf("%d voters, frac %v: layer %d differs from the naive trimmed vote", count, frac, l)
				}
			}
		}
	}
}

func TestTrimmedVoteZeroTrimIsBorda(t *testing.T) {
	rng := newRand(33)
	sizes := []int{2000, 300, 7}
	voters := randVoters(rng, sizes, 11)
	tv, bv := NewTrimmedVote(sizes, 0), NewVote(sizes)
	for _, vr := range voters {
		if err := tv.Add(vr); err != nil {
			t.Fatal(err)
		}
		if err := bv.Add(vr); err != nil {
			t.Fatal(err)
		}
	}
	for l := range sizes {
		if !slices.Equal(tv.Result(l, nil), bv.Result(l, nil)) {
			t.Fatalf("layer %d: trim fraction 0 differs from the Borda count", l)
		}
	}
}

func TestTrimmedVoteRejectsAndLeavesVoteUnchanged(t *testing.T) {
	rng := newRand(34)
	sizes := []int{100, 50, 20}
	good := randVoters(rng, sizes, 3)
	v := NewTrimmedVote(sizes, 0.5)
	addAll(t, v, good...)
	results := func() [][]uint32 {
		out := make([][]uint32, len(sizes))
		for l := range sizes {
			out[l] = v.Result(l, nil)
		}
		return out
	}
	before := results()
	valid := randVoters(rng, sizes, 1)[0]
	dup := slices.Clone(valid[2])
	dup[19] = dup[3]
	outOfRange := slices.Clone(valid[0])
	outOfRange[60] = 100
	for name, layers := range map[string][][]uint32{
		"duplicate in last layer": {valid[0], valid[1], dup},
		"out of range":            {outOfRange, valid[1], valid[2]},
		"short layer":             {valid[0], valid[1][:49], valid[2]},
		"layer count":             valid[:2],
	} {
		err := v.Add(layers)
		if !errors.Is(err, ErrInvalidRanking) && !errors.Is(err, ErrLayerCount) {
			t.Errorf("%s: got %v", name, err)
		}
		if v.Voters() != 3 {
			t.Fatalf("%s: %d voters after a rejected Add", name, v.Voters())
		}
		after := results()
		for l := range sizes {
			if !slices.Equal(after[l], before[l]) {
				t.Fatalf("%s: layer %d changed by a rejected Add", name, l)
			}
		}
	}
	addAll(t, v, valid)
	want := naiveTrimmed(sizes, append(good, valid), 0.5)
	for l := range sizes {
		if got := v.Result(l, nil); !slices.Equal(got, want[l]) {
			t.Fatalf("layer %d differs after rejected Adds", l)
		}
	}
	// Reset forgets the voters but keeps working.
	v.Reset()
	addAll(t, v, good[0])
	if got := v.Result(0, nil); !slices.Equal(got, good[0][0]) {
		t.Fatal("after Reset a single voter's ranking was not the result")
	}
}

func TestTrimCount(t *testing.T) {
	for _, tc := range []struct {
		k    int
		frac float64
		want int
	}{
		{0, 0.2, 0}, {1, 0.5, 0}, {2, 0.5, 0}, {3, 0.5, 1}, {4, 0.5, 1}, {5, 0.5, 2},
		{24, 0.5, 11}, {25, 0.5, 12}, {25, 0.2, 5}, {25, 0.1, 2}, {25, 0, 0}, {10, 0.3, 3}, {100, 0.3, 30},
	} {
		if got := TrimCount(tc.k, tc.frac); got != tc.want {
			t.Errorf("TrimCount(%d, %v) = %d, want %d", tc.k, tc.frac, got, tc.want)
		}
	}
}

func TestNewTrimmedVotePanicsOnBadFraction(t *testing.T) {
	for _, frac := range []float64{-0.1, 0.51, math.NaN()} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("frac %v: no panic", frac)
				}
			}()
			NewTrimmedVote([]int{3}, frac)
		}()
	}
}

func TestFilteredVoteHandComputed(t *testing.T) {
	// 8 edges. Five honest voters: the identity, and the identity with one
	// pair swapped; two attackers send its reverse. The median-position
	// consensus is the identity (per edge, 5 of 7 positions are its index).
	// Footrule distances to it: 0, then 2 for each swap, 32 for the reverse,
	// over the maximum floor(64/2) = 32: 0, 1/16 ×4, 1, 1.
	// Median 1/16; absolute deviations 1/16, 0 ×4, 15/16 ×2: MAD 0. The
	// limit is 1/16: the honest voters are kept, the attackers dropped.
	id := []uint32{0, 1, 2, 3, 4, 5, 6, 7}
	rev := []uint32{7, 6, 5, 4, 3, 2, 1, 0}
	voters := [][][]uint32{
		{id},
		{{1, 0, 2, 3, 4, 5, 6, 7}},
		{{0, 1, 3, 2, 4, 5, 6, 7}},
		{{0, 1, 2, 3, 5, 4, 6, 7}},
		{{0, 1, 2, 3, 4, 5, 7, 6}},
		{rev}, {rev},
	}
	v := NewFilteredVote([]int{8})
	for _, vr := range voters {
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
	}
	got := v.Result(nil)
	if !slices.Equal(got[0], id) {
		t.Errorf("result %v, want the identity", got[0])
	}
	if want := []float64{0, 0.0625, 0.0625, 0.0625, 0.0625, 1, 1}; !slices.Equal(v.Distances(), want) {
		t.Errorf("distances %v, want %v", v.Distances(), want)
	}
	if want := []bool{true, true, true, true, true, false, false}; !slices.Equal(v.Kept(), want) {
		t.Errorf("kept %v, want %v", v.Kept(), want)
	}
}

// noisyCopy returns r with swaps random adjacent transpositions.
func noisyCopy(rng *rand.Rand, r []uint32, swaps int) []uint32 {
	c := slices.Clone(r)
	for range swaps {
		i := rng.IntN(len(c) - 1)
		c[i], c[i+1] = c[i+1], c[i]
	}
	return c
}

func TestFilteredVoteDropsReversalAttackers(t *testing.T) {
	// Honest voters are noisy copies of one ranking per layer, as FRL peers
	// that trained a little from the same global model; the attackers send
	// the reverse of the honest collective ranking, as in FRL's attack.
	rng := newRand(41)
	sizes := []int{2000, 300, 10}
	base := randVoters(rng, sizes, 1)[0]
	var honest [][][]uint32
	for k := range 17 {
		vr := make([][]uint32, len(sizes))
		for l, n := range sizes {
			vr[l] = noisyCopy(rng, base[l], (k+1)*n/4)
		}
		honest = append(honest, vr)
	}
	collective := naiveVote(sizes, honest)
	rev := make([][]uint32, len(sizes))
	for l := range sizes {
		rev[l] = slices.Clone(collective[l])
		slices.Reverse(rev[l])
	}
	v := NewFilteredVote(sizes)
	var wantKept []bool
	for k := range 25 {
		vr := rev
		if k%3 != 0 || k >= 24 { // 8 attackers of 25, interleaved
			vr = honest[len(wantKept)-countFalse(wantKept)]
		}
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
		wantKept = append(wantKept, k%3 != 0 || k >= 24)
	}
	got := v.Result(nil)
	if !slices.Equal(v.Kept(), wantKept) {
		t.Fatalf("kept %v, want %v (distances %.3f)", v.Kept(), wantKept, v.Distances())
	}
	for l := range sizes {
		if !slices.Equal(got[l], collective[l]) {
			t.Fatalf("layer %d is not the Borda count of the honest voters", l)
		}
	}
	// The plain Borda count with the attackers is another ranking.
	plain := NewVote(sizes)
	for k := range 25 {
		vr := rev
		if wantKept[k] {
			vr = honest[k-countFalse(wantKept[:k])]
		}
		_ = plain.Add(vr)
	}
	if slices.Equal(plain.Result(0, nil), collective[0]) {
		t.Error("the attack does not change the plain Borda count: the test shows nothing")
	}
}

func countFalse(b []bool) int {
	n := 0
	for _, x := range b {
		if !x {
			n++
		}
	}
	return n
}

func TestFilteredVoteIsBordaOfKept(t *testing.T) {
	rng := newRand(42)
	sizes := []int{500, 0, 1, 40}
	for _, count := range []int{1, 2, 3, 9, 25} {
		voters := randVoters(rng, sizes, count)
		v := NewFilteredVote(sizes)
		for _, vr := range voters {
			if err := v.Add(vr); err != nil {
				t.Fatal(err)
			}
		}
		got := v.Result(nil)
		var kept [][][]uint32
		for k, ok := range v.Kept() {
			if ok {
				kept = append(kept, voters[k])
			}
		}
		if len(kept) == 0 {
			t.Fatalf("%d voters: none kept", count)
		}
		want := naiveVote(sizes, kept)
		for l := range sizes {
			if !slices.Equal(got[l], want[l]) {
				t.Fatalf("%d voters: layer %d is not the Borda count of the kept voters", count, l)
			}
		}
	}
}

func TestFilteredVoteSingleIdenticalAndEmpty(t *testing.T) {
	rng := newRand(43)
	sizes := []int{1, 2, 1000, 257}
	r := randVoters(rng, sizes, 1)[0]
	v := NewFilteredVote(sizes)
	for voters := 1; voters <= 5; voters++ {
		if err := v.Add(r); err != nil {
			t.Fatal(err)
		}
		got := v.Result(nil)
		for l := range sizes {
			if !slices.Equal(got[l], r[l]) {
				t.Fatalf("%d identical voters: layer %d is not their ranking", voters, l)
			}
		}
		if slices.Contains(v.Kept(), false) {
			t.Fatalf("%d identical voters: one dropped", voters)
		}
	}
	if err := v.Add(r[:2]); !errors.Is(err, ErrLayerCount) || v.Voters() != 5 {
		t.Errorf("bad voter: %v, %d voters", err, v.Voters())
	}
	v.Reset()
	got := v.Result(nil)
	if !slices.Equal(got[2], identity(make([]uint32, 1000))) || len(v.Kept()) != 0 {
		t.Errorf("no voters: not the identity")
	}
}

// Filter is Result's measuring half: the median-position consensus, the
// distances to it, the Hampel limit and the kept voters, without the vote.
func TestFilteredVoteFilter(t *testing.T) {
	rng := newRand(44)
	sizes := []int{300, 0, 1, 40}
	// Nine voters near one ranking, two sending its reverse: outliers.
	base := randVoters(rng, sizes, 1)[0]
	var voters [][][]uint32
	for range 9 {
		vr := make([][]uint32, len(sizes))
		for l, n := range sizes {
			vr[l] = slices.Clone(base[l])
			if n >= 2 {
				vr[l] = noisyCopy(rng, base[l], n/2)
			}
		}
		voters = append(voters, vr)
	}
	rev := make([][]uint32, len(sizes))
	for l := range sizes {
		rev[l] = slices.Clone(base[l])
		slices.Reverse(rev[l])
	}
	voters = append(voters, rev, rev)
	v := NewFilteredVote(sizes)
	med := NewTrimmedVote(sizes, 0.5)
	for _, vr := range voters {
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
		if err := med.Add(vr); err != nil {
			t.Fatal(err)
		}
	}
	cons := v.Filter(nil)
	dist, kept, limit := v.Distances(), v.Kept(), v.Limit()
	for l := range sizes {
		if !slices.Equal(cons[l], med.Result(l, nil)) {
			t.Fatalf("layer %d: not the median-position consensus", l)
		}
	}
	// The distances by hand: the footrule over floor(n²/2), averaged over
	// the layers of 2 edges or more (300 and 40).
	for j, vr := range voters {
		var d float64
		for _, l := range []int{0, 3} {
			pos := make([]uint32, sizes[l])
			for i, e := range cons[l] {
				pos[e] = uint32(i)
			}
			var f int
			for i, e := range vr[l] {
				f += max(i-int(pos[e]), int(pos[e])-i)
			}
			d += float64(f) / float64(sizes[l]*sizes[l]/2)
		}
		if d /= 2; math.Abs(d-dist[j]) > 1e-12 {
			t.Fatalf("voter %d: distance %v, want %v", j, dist[j], d)
		}
	}
	if limit != HampelLimit(dist) || kept[9] || kept[10] || slices.Contains(kept[:9], false) {
		t.Errorf("limit %v (want %v), kept %v", limit, HampelLimit(dist), kept)
	}
	for j, d := range dist {
		if kept[j] != (d <= limit) {
			t.Errorf("voter %d at %v kept %v, limit %v", j, d, kept[j], limit)
		}
	}
	// Result measures the same and keeps the given slices' memory.
	v.Result(nil)
	if !slices.Equal(v.Distances(), dist) || !slices.Equal(v.Kept(), kept) || v.Limit() != limit {
		t.Error("Result and Filter measure differently")
	}
	again := v.Filter(cons)
	if &again[0][0] != &cons[0][0] {
		t.Error("Filter did not reuse the consensus slices")
	}
	// HampelLimit leaves its input alone.
	d := []float64{3, 1, 2}
	if math.Abs(HampelLimit(d)-(2+HampelK)) > 1e-12 || !slices.Equal(d, []float64{3, 1, 2}) {
		t.Errorf("HampelLimit: %v, input now %v", HampelLimit(d), d)
	}
}
