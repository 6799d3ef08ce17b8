package rankvote

import (
	"math"
	"slices"
	"testing"
)

// TestSignVoteBound checks the bound of SignVote's doc: whatever a coalition
// of m of the kk kept voters sends, every edge's aggregate position is
// within eta·m/kk of g(e) + eta·S_h(e)/kk, S_h(e) being the sum over the
// other kept voters of the sign of their move of e from the previous
// ranking g. The coalitions include far moves, which a vote on positions
// follows and this one must not.
func TestSignVoteBound(t *testing.T) {
	const n, k = 300, 25
	rng := newRand(9)
	prev := randPerm(rng, n)
	reversed := slices.Clone(prev)
	slices.Reverse(reversed)
	// far moves the block of edges at [from, from+w) by positions up.
	far := func(from, w, by int) []uint32 {
		return slices.Concat(prev[:from], prev[from+w:from+w+by], prev[from:from+w], prev[from+w+by:])
	}
	// rotate swaps the w positions on either side of b, as adaptive-rotate.
	rotate := func(b, w int) []uint32 {
		return slices.Concat(prev[:b-w], prev[b:b+w], prev[b-w:b], prev[b+w:])
	}
	attacks := map[string]func(j int) []uint32{
		"reverse": func(int) []uint32 { return reversed },
		"far":     func(int) []uint32 { return far(n/4-10, 10, 150) },
		"rotate":  func(int) []uint32 { return rotate(n/4, 30) },
		"noisy":   func(j int) []uint32 { return noisyCopy(newRand(uint64(j)), rotate(n/4, 20), 20_000) },
		"random":  func(j int) []uint32 { return randPerm(newRand(uint64(100+j)), n) },
	}
	exercised := 0
	for name, attack := range attacks {
		for _, m := range []int{1, 3, 5, 8, 11} {
			voters := honestAround(uint64(m), prev, k-m, 50_000)
			for j := range m {
				voters = append(voters, attack(j))
			}
			v := NewSignVote([]int{n}, 3)
			if err := v.SetPrevious([][]uint32{prev}); err != nil {
				t.Fatal(err)
			}
			for _, r := range voters {
				if err := v.Add([][]uint32{r}); err != nil {
					t.Fatal(err)
				}
			}
			orders := v.Result(nil)
			kept := v.Kept()
			eta := float64(v.Radius()[0])
			if eta < 1 {
				t.Fatalf("%s m=%d: step %v", name, m, eta)
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
			g := make([]float64, n)
			for p, e := range prev {
				g[e] = float64(p)
			}
			sh := make([]float64, n)
			for j, r := range voters[:k-m] {
				if !kept[j] {
					continue
				}
				for p, e := range r {
					switch {
					case float64(p) > g[e]:
						sh[e]++
					case float64(p) < g[e]:
						sh[e]--
					}
				}
			}
			pos := v.Positions(0)
			worst := 0.0 // the largest shift of an edge by the coalition, in eta·m/kk
			for e := range n {
				shift := math.Abs(pos[e] - (g[e] + eta*sh[e]/float64(kk)))
				if shift > eta*float64(mk)/float64(kk)+1e-9 {
					t.Fatalf("%s m=%d (kept %d of %d): edge %d shifted %v, more than eta·m/kk = %v", name, m, mk, kk, e, shift, eta*float64(mk)/float64(kk))
				}
				if mk > 0 {
					worst = max(worst, shift/(eta*float64(mk)/float64(kk)))
				}
			}
			t.Logf("%s m=%d: %d of %d kept voters in the coalition, largest shift %.2f of the bound", name, m, mk, kk, worst)
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

// TestSignVoteIgnoresDistance: five voters of 25 moving a block of edges
// 200 positions carry it 200·5/25 = 40 positions in a Borda count, but at
// most eta·5/25 in the sign vote.
func TestSignVoteIgnoresDistance(t *testing.T) {
	const n, k, m = 400, 25, 5
	prev := randPerm(newRand(3), n)
	block := slices.Concat(prev[:100], prev[110:310], prev[100:110], prev[310:])
	voters := honestAround(9, prev, k-m, 100_000)
	for range m {
		voters = append(voters, block)
	}
	v := NewSignVote([]int{n}, 3)
	b := NewVote([]int{n})
	if err := v.SetPrevious([][]uint32{prev}); err != nil {
		t.Fatal(err)
	}
	for _, r := range voters {
		if err := v.Add([][]uint32{r}); err != nil {
			t.Fatal(err)
		}
		if err := b.Add([][]uint32{r}); err != nil {
			t.Fatal(err)
		}
	}
	v.Result(nil)
	if got := slices.Index(v.Kept(), false); got >= 0 {
		t.Fatalf("voter %d dropped; the test needs the coalition kept", got)
	}
	eta := float64(v.Radius()[0])
	borda := b.Result(0, nil)
	pos := v.Positions(0)
	for _, e := range prev[100:110] {
		// The coalition's part of the edge's move: what is left once the
		// honest voters' signs are counted.
		g := float64(slices.Index(prev, e))
		var sh float64
		for _, r := range voters[:k-m] {
			switch p := float64(slices.Index(r, e)); {
			case p > g:
				sh++
			case p < g:
				sh--
			}
		}
		coalition := pos[e] - (g + eta*sh/k)
		bordaMoved := float64(slices.Index(borda, e)) - g
		if coalition > eta*m/k+1e-9 || bordaMoved < 20 {
			t.Errorf("edge %d: the coalition moved it %.1f in the sign vote (bound eta·m/k = %.1f), %v positions in Borda", e, coalition, eta*m/k, bordaMoved)
		}
	}
}

func TestSignVoteEmptyAndBadInput(t *testing.T) {
	v := NewSignVote([]int{4}, 2)
	if got := v.Result(nil); !slices.Equal(got[0], []uint32{0, 1, 2, 3}) {
		t.Errorf("no voters: %v, want the identity", got[0])
	}
	if err := v.Add([][]uint32{{0, 1, 1, 3}}); err == nil {
		t.Error("a ranking that is not a permutation was accepted")
	}
	if v.Voters() != 0 {
		t.Errorf("voters %d after a rejected ranking", v.Voters())
	}
	for _, bad := range [][][]uint32{{{0, 1, 2, 2}}, {{0, 1, 2}}, {{0, 1, 2, 3}, {0}}} {
		if err := v.SetPrevious(bad); err == nil {
			t.Errorf("previous ranking %v accepted", bad)
		}
	}
	// One voter, moved from the previous ranking 3,2,1,0 (g = 3,2,1,0 for
	// edges 0..3) to the identity: edges 0 and 1 moved down, 2 and 3 up, each
	// by eta = 1 (a lone voter is at distance 0: the least step), so the
	// positions are 2, 1, 2, 1; ties by the voter's positions: 1, 3, 0, 2.
	if err := v.SetPrevious([][]uint32{{3, 2, 1, 0}}); err != nil {
		t.Fatal(err)
	}
	if err := v.Add([][]uint32{{0, 1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	got := v.Result(nil)
	if !slices.Equal(got[0], []uint32{1, 3, 0, 2}) || !slices.Equal(v.Positions(0), []float64{2, 1, 2, 1}) {
		t.Errorf("one voter: %v", got[0])
	}
	for _, bad := range []float64{0, -1, math.Inf(1), math.NaN()} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("alpha %v accepted", bad)
				}
			}()
			NewSignVote([]int{4}, bad)
		}()
	}
}
