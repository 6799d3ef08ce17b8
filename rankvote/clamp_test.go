package rankvote

import (
	"math"
	"slices"
	"testing"
)

// honestAround returns k rankings of n edges, each base with swaps random
// adjacent transpositions: voters that mostly agree, as FRL peers do.
func honestAround(seed uint64, base []uint32, k, swaps int) [][]uint32 {
	rng := newRand(seed)
	out := make([][]uint32, k)
	for j := range out {
		out[j] = noisyCopy(rng, base, swaps)
	}
	return out
}

// TestClampedVoteBound checks the bound of ClampedVote's doc: whatever a
// coalition of m < kk/2 of the kept voters sends, every edge's aggregate
// position lies in [h_(ceil(kk/2)-m) - c, h_(floor(kk/2)+1) + c], h being
// the other kept voters' positions of it, ascending and 1-indexed.
func TestClampedVoteBound(t *testing.T) {
	const n = 300
	rng := newRand(7)
	base := randPerm(rng, n)
	reversed := slices.Clone(base)
	slices.Reverse(reversed)
	// crafted sends base with the edges at positions [from, from+w) moved
	// by positions up: moves that a plain Borda count follows.
	crafted := func(from, w, by int) []uint32 {
		return slices.Concat(base[:from], base[from+w:from+w+by], base[from:from+w], base[from+w+by:])
	}
	attacks := map[string]func(j int) []uint32{
		"reverse":       func(int) []uint32 { return reversed },
		"crafted":       func(int) []uint32 { return crafted(n/4-10, 10, 100) },
		"crafted-far":   func(int) []uint32 { return crafted(n/4-10, 3, n-n/4-3) },
		"crafted-noisy": func(j int) []uint32 { return noisyCopy(newRand(uint64(j)), crafted(n/4-10, 20, 60), 20_000) },
		"random":        func(j int) []uint32 { return randPerm(newRand(uint64(100+j)), n) },
	}
	exercised := 0 // cases in which the coalition was kept
	for name, attack := range attacks {
		for _, m := range []int{1, 3, 5, 8, 11} {
			const k = 25
			voters := honestAround(uint64(m), base, k-m, 50_000)
			for j := range m {
				voters = append(voters, attack(j))
			}
			v := NewClampedVote([]int{n}, 1)
			for _, r := range voters {
				if err := v.Add([][]uint32{r}); err != nil {
					t.Fatal(err)
				}
			}
			orders := v.Result(nil)
			kept := v.Kept()
			c := float64(v.Radius()[0])
			if c < 1 {
				t.Fatalf("%s m=%d: radius %v", name, m, c)
			}
			kk, mk := 0, 0
			for j, ok := range kept {
				if ok {
					kk++
					if j >= k-m {
						mk++
					}
				}
			}
			if mk > 0 {
				exercised++
			}
			if 2*mk >= kk {
				t.Fatalf("%s m=%d: %d of %d kept voters are the coalition; the bound needs fewer than half", name, m, mk, kk)
			}
			pos := v.Positions(0)
			tight := math.Inf(-1) // how close an edge came to the bound, in radii
			for e := range n {
				var h []float64
				for j, r := range voters[:k-m] {
					if kept[j] {
						h = append(h, float64(slices.Index(r, uint32(e))))
					}
				}
				slices.Sort(h)
				lo := h[(kk+1)/2-mk-1] - c
				hi := h[kk/2] + c // h_(floor(kk/2)+1), 1-indexed
				tight = max(tight, (pos[e]-hi)/c, (lo-pos[e])/c)
				if pos[e] < lo-1e-9 || pos[e] > hi+1e-9 {
					t.Fatalf("%s m=%d (kept %d of %d): edge %d at %v, outside [%v, %v]", name, m, mk, kk, e, pos[e], lo, hi)
				}
			}
			t.Logf("%s m=%d: %d of %d kept voters in the coalition, closest edge %.2f radii inside the bound", name, m, mk, kk, -tight)
			// The ranking orders edges by that position.
			for i := 1; i < n; i++ {
				if pos[orders[0][i-1]] > pos[orders[0][i]] {
					t.Fatalf("%s m=%d: ranking not by aggregate position at %d", name, m, i)
				}
			}
		}
	}
	if exercised < 8 {
		t.Errorf("the filter kept a coalition in only %d cases; the bound is barely tested", exercised)
	}
}

// TestClampedVoteBoundsWhatBordaDoesNot shows the bound at work: five voters
// of 25, close enough to the others to pass the filter, each move a block of
// edges 200 positions up; a plain Borda count of the same voters follows
// them a fifth of the way, the clamp much less.
func TestClampedVoteBoundsWhatBordaDoesNot(t *testing.T) {
	const n, k, m, from, w, by = 400, 25, 5, 100, 10, 200
	base := randPerm(newRand(3), n)
	block := slices.Clone(base[from : from+w])
	attack := slices.Concat(base[:from], base[from+w:from+w+by], block, base[from+w+by:])
	voters := honestAround(9, base, k-m, 100_000)
	for range m {
		voters = append(voters, attack)
	}
	borda := NewVote([]int{n})
	v := NewClampedVote([]int{n}, 1)
	for _, r := range voters {
		if err := borda.Add([][]uint32{r}); err != nil {
			t.Fatal(err)
		}
		if err := v.Add([][]uint32{r}); err != nil {
			t.Fatal(err)
		}
	}
	clamped := v.Result(nil)[0]
	if d := v.Kept(); countFalse(d[k-m:]) != 0 {
		t.Fatalf("the filter dropped the attackers (kept %v); this test is about the clamp", d)
	}
	shift := func(order []uint32) float64 {
		p := make([]int, n)
		for i, e := range order {
			p[e] = i
		}
		var s float64
		for i, e := range block {
			s += float64(p[e] - (from + i))
		}
		return s / float64(len(block))
	}
	b, c := shift(borda.Result(0, nil)), shift(clamped)
	radius := float64(v.Radius()[0])
	t.Logf("block moved %.1f positions by Borda, %.1f under the clamp (radius %v)", b, c, radius)
	if b < 30 {
		t.Errorf("Borda moved the block only %.1f positions; the attack is too weak to test anything", b)
	}
	if c > b/2 {
		t.Errorf("under the clamp the block moved %.1f positions (Borda %.1f, radius %v)", c, b, radius)
	}
}

// TestClampedVoteWideIsBorda: with a radius no voter reaches, the aggregate
// position is the kept voters' mean position, as in FilteredVote.
func TestClampedVoteWideIsBorda(t *testing.T) {
	const n = 120
	base := randPerm(newRand(5), n)
	voters := honestAround(11, base, 9, 500)
	v := NewClampedVote([]int{n, 1, 0}, 1e9)
	f := NewFilteredVote([]int{n, 1, 0})
	for _, r := range voters {
		layers := [][]uint32{r, {0}, {}}
		if err := v.Add(layers); err != nil {
			t.Fatal(err)
		}
		if err := f.Add(layers); err != nil {
			t.Fatal(err)
		}
	}
	got := v.Result(nil)
	want := f.Result(nil)
	if !slices.Equal(v.Kept(), f.Kept()) {
		t.Fatalf("kept %v, FilteredVote kept %v", v.Kept(), f.Kept())
	}
	pos := v.Positions(0)
	mean := make([]float64, n)
	kept := 0
	for j, r := range voters {
		if !f.Kept()[j] {
			continue
		}
		kept++
		for i, e := range r {
			mean[e] += float64(i)
		}
	}
	for e := range mean {
		if math.Abs(mean[e]/float64(kept)-pos[e]) > 1e-9 {
			t.Fatalf("edge %d: position %v, mean %v", e, pos[e], mean[e]/float64(kept))
		}
	}
	// Same sums; only the order of equal sums may differ (by median here,
	// by index there).
	for i := 1; i < n; i++ {
		if pos[got[0][i-1]] > pos[got[0][i]] || pos[want[0][i-1]] > pos[want[0][i]] {
			t.Fatalf("not ordered by mean position at %d", i)
		}
	}
	if len(got[1]) != 1 || len(got[2]) != 0 {
		t.Fatalf("small layers: %v %v", got[1], got[2])
	}
}

func TestClampedVoteEmptyAndBadInput(t *testing.T) {
	v := NewClampedVote([]int{4}, 2)
	if got := v.Result(nil); !slices.Equal(got[0], []uint32{0, 1, 2, 3}) {
		t.Errorf("no voters: %v, want the identity", got[0])
	}
	if err := v.Add([][]uint32{{0, 1, 1, 3}}); err == nil {
		t.Error("a ranking that is not a permutation was accepted")
	}
	if v.Voters() != 0 {
		t.Errorf("voters %d after a rejected ranking", v.Voters())
	}
	for _, bad := range []float64{0, -1, math.Inf(1), math.NaN()} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("alpha %v accepted", bad)
				}
			}()
			NewClampedVote([]int{4}, bad)
		}()
	}
}

func TestClampRadius(t *testing.T) {
	for _, c := range []struct {
		disp  []float64
		alpha float64
		n     int
		want  uint32
	}{
		{[]float64{1, 2, 3}, 2, 100, 4},
		{[]float64{1, 2, 3, 4}, 1, 100, 3}, // median 2.5, up to 3
		{[]float64{0, 0}, 3, 100, 1},       // at least 1
		{[]float64{500}, 3, 100, 99},       // at most n-1
		{nil, 3, 100, 1},
		{[]float64{5}, 3, 1, 0},
	} {
		if got := ClampRadius(c.disp, c.alpha, c.n); got != c.want {
			t.Errorf("ClampRadius(%v, %v, %d) = %d, want %d", c.disp, c.alpha, c.n, got, c.want)
		}
	}
}
