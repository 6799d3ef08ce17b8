package rankvote

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestVoteHandComputed(t *testing.T) {
	// 3 voters, 4 edges. Positions (where each edge stands):
	//   voter 1 [0 1 2 3]: e0=0 e1=1 e2=2 e3=3
	//   voter 2 [0 1 3 2]: e0=0 e1=1 e3=2 e2=3
	//   voter 3 [3 0 2 1]: e3=0 e0=1 e2=2 e1=3
	// Sums: e0=1, e1=5, e2=7, e3=5. e1 and e3 tie: the lower index, e1, first.
	v := NewVote([]int{4})
	for _, r := range [][]uint32{{0, 1, 2, 3}, {0, 1, 3, 2}, {3, 0, 2, 1}} {
		if err := v.Add([][]uint32{r}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := v.Sums(0, nil), []uint64{1, 5, 7, 5}; !slices.Equal(got, want) {
		t.Errorf("sums %v, want %v", got, want)
	}
	if got, want := v.Result(0, nil), []uint32{0, 1, 3, 2}; !slices.Equal(got, want) {
		t.Errorf("result %v, want %v", got, want)
	}
	if v.Voters() != 3 {
		t.Errorf("voters %d", v.Voters())
	}
}

func lenetSizes() []int { return []int{235200, 30000, 1000} }

func TestVoteSingleAndIdenticalVoters(t *testing.T) {
	rng := newRand(12)
	sizes := []int{1, 2, 1000, 5000}
	r := make([][]uint32, len(sizes))
	for l, n := range sizes {
		r[l] = randPerm(rng, n)
	}
	v := NewVote(sizes)
	for voters := 1; voters <= 7; voters++ {
		if err := v.Add(r); err != nil {
			t.Fatal(err)
		}
		for l := range sizes {
			if got := v.Result(l, nil); !slices.Equal(got, r[l]) {
				t.Fatalf("%d identical voters: layer %d result is not their ranking", voters, l)
			}
		}
	}
}

func TestVoteEmptyIsIdentity(t *testing.T) {
	v := NewVote([]int{5})
	if got := v.Result(0, nil); !slices.Equal(got, []uint32{0, 1, 2, 3, 4}) {
		t.Errorf("no voters: %v", got)
	}
}

// naiveVote is the reference: positions summed in uint64, sorted stably.
func naiveVote(sizes []int, voters [][][]uint32) [][]uint32 {
	out := make([][]uint32, len(sizes))
	for l, n := range sizes {
		sums := make([]uint64, n)
		for _, vr := range voters {
			for i, e := range vr[l] {
				sums[e] += uint64(i)
			}
		}
		out[l] = stableArgsort(n, func(a, b int) int { return cmpU64(sums[a], sums[b]) })
	}
	return out
}

func randVoters(rng *rand.Rand, sizes []int, count int) [][][]uint32 {
	vs := make([][][]uint32, count)
	for k := range vs {
		vs[k] = make([][]uint32, len(sizes))
		for l, n := range sizes {
			vs[k][l] = randPerm(rng, n)
		}
	}
	return vs
}

func TestVoteMatchesNaive(t *testing.T) {
	rng := newRand(13)
	sizes := []int{3000, 0, 1, 17, 500}
	voters := randVoters(rng, sizes, 9)
	// Correlated voters give many ties.
	for k := range voters[:4] {
		voters[k][0] = voters[0][0]
	}
	v := NewVote(sizes)
	for _, vr := range voters {
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
	}
	want := naiveVote(sizes, voters)
	for l := range sizes {
		if got := v.Result(l, nil); !slices.Equal(got, want[l]) {
			t.Fatalf("layer %d differs from the naive vote", l)
		}
	}
}

func TestVoteAddRejectsAndLeavesVoteUnchanged(t *testing.T) {
	rng := newRand(14)
	sizes := []int{100, 50, 20}
	good := randVoters(rng, sizes, 3)
	v := NewVote(sizes)
	for _, vr := range good {
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func() [][]uint64 {
		s := make([][]uint64, len(sizes))
		for l := range sizes {
			s[l] = v.Sums(l, nil)
		}
		return s
	}
	before := snapshot()
	valid := randVoters(rng, sizes, 1)[0]

	dupLast := slices.Clone(valid[2])
	dupLast[19] = dupLast[3] // the very last position: all else was summed
	dupMid := slices.Clone(valid[1])
	dupMid[17] = dupMid[4]
	outOfRange := slices.Clone(valid[0])
	outOfRange[60] = 100

	cases := []struct {
		name   string
		layers [][]uint32
		layer  int
		reason string
		msg    string
	}{
		{"duplicate in last layer at its end", [][]uint32{valid[0], valid[1], dupLast}, 2, ReasonDuplicate,
			"rankvote: layer 2: invalid ranking: index 19 repeats value"},
		{"duplicate in middle layer", [][]uint32{valid[0], dupMid, valid[2]}, 1, ReasonDuplicate,
			"rankvote: layer 1: invalid ranking: index 17 repeats value"},
		{"out of range in first layer", [][]uint32{outOfRange, valid[1], valid[2]}, 0, ReasonRange,
			"rankvote: layer 0: invalid ranking: index 60 holds value 100, want < 100"},
		{"short layer", [][]uint32{valid[0], valid[1][:49], valid[2]}, 1, ReasonLength,
			"rankvote: layer 1: invalid ranking: length 49, want 50"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Add(tc.layers)
			var ire *InvalidRankingError
			if !errors.As(err, &ire) || ire.Layer != tc.layer || ire.Reason != tc.reason {
				t.Fatalf("got %v, want %s in layer %d", err, tc.reason, tc.layer)
			}
			if !strings.HasPrefix(err.Error(), tc.msg) {
				t.Errorf("message %q, want prefix %q", err, tc.msg)
			}
			if v.Voters() != 3 {
				t.Errorf("voters %d after a rejected Add", v.Voters())
			}
			after := snapshot()
			for l := range sizes {
				if !slices.Equal(after[l], before[l]) {
					t.Fatalf("layer %d sums changed by a rejected Add", l)
				}
			}
		})
	}
	if err := v.Add(valid[:2]); !errors.Is(err, ErrLayerCount) {
		t.Errorf("two layers: got %v, want ErrLayerCount", err)
	}
	// The vote still works after the rejections.
	if err := v.Add(valid); err != nil {
		t.Fatal(err)
	}
	want := naiveVote(sizes, append(good, valid))
	for l := range sizes {
		if got := v.Result(l, nil); !slices.Equal(got, want[l]) {
			t.Fatalf("layer %d differs after rejected Adds", l)
		}
	}
}

func TestVoteMergeEqualsAddingAll(t *testing.T) {
	rng := newRand(15)
	sizes := []int{2000, 300, 7}
	voters := randVoters(rng, sizes, 11)
	all := NewVote(sizes)
	parts := []*Vote{NewVote(sizes), NewVote(sizes), NewVote(sizes)}
	for k, vr := range voters {
		if err := all.Add(vr); err != nil {
			t.Fatal(err)
		}
		if err := parts[k%3].Add(vr); err != nil {
			t.Fatal(err)
		}
	}
	merged := NewVote(sizes)
	for _, p := range parts {
		if err := merged.Merge(p); err != nil {
			t.Fatal(err)
		}
	}
	if merged.Voters() != all.Voters() {
		t.Fatalf("voters %d, want %d", merged.Voters(), all.Voters())
	}
	for l := range sizes {
		if !slices.Equal(merged.Sums(l, nil), all.Sums(l, nil)) {
			t.Fatalf("layer %d: merged sums differ", l)
		}
		if !slices.Equal(merged.Result(l, nil), all.Result(l, nil)) {
			t.Fatalf("layer %d: merged result differs", l)
		}
	}
	// Merging a vote into itself doubles it.
	double := NewVote(sizes)
	_ = double.Merge(all)
	_ = double.Merge(all)
	if err := all.Merge(all); err != nil {
		t.Fatal(err)
	}
	for l := range sizes {
		if !slices.Equal(double.Sums(l, nil), all.Sums(l, nil)) {
			t.Fatalf("layer %d: self-merge differs", l)
		}
	}
	if err := all.Merge(NewVote([]int{2000, 300, 8})); !errors.Is(err, ErrShape) {
		t.Errorf("mismatched merge: got %v, want ErrShape", err)
	}
}

// TestVoteWidening lowers the 32-bit bound so that a few voters cross it.
func TestVoteWidening(t *testing.T) {
	defer func(old uint64) { maxSum32 = old }(maxSum32)
	maxSum32 = 40 // a layer of n edges widens once voters*(n-1) > 40
	rng := newRand(16)
	sizes := []int{11, 5, 1} // widen at voter 5, 11, never
	voters := randVoters(rng, sizes, 14)
	v := NewVote(sizes)
	for k, vr := range voters {
		if err := v.Add(vr); err != nil {
			t.Fatal(err)
		}
		if got, want := v.wide[0], (k+1)*10 > 40; got != want {
			t.Fatalf("after %d voters layer 0 wide=%v", k+1, got)
		}
		want := naiveVote(sizes, voters[:k+1])
		for l := range sizes {
			if got := v.Result(l, nil); !slices.Equal(got, want[l]) {
				t.Fatalf("%d voters: layer %d differs", k+1, l)
			}
		}
	}
	// Rejected Adds on a widened layer leave it unchanged.
	before := v.Sums(0, nil)
	for _, bad0 := range [][]uint32{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11}, // out of range at the end
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9},  // duplicate at the end
	} {
		if err := v.Add([][]uint32{bad0, voters[0][1], voters[0][2]}); err == nil {
			t.Fatal("bad ranking accepted")
		}
		if err := v.Add([][]uint32{voters[0][0], voters[0][1][:4], voters[0][2]}); err == nil {
			t.Fatal("short ranking accepted")
		}
	}
	if after := v.Sums(0, nil); !slices.Equal(after, before) {
		t.Fatal("rejected Adds changed a wide layer")
	}
	// Sums of a wide layer.
	wantSums := make([]uint64, sizes[0])
	for _, vr := range voters {
		for i, e := range vr[0] {
			wantSums[e] += uint64(i)
		}
	}
	if !v.wide[0] || !slices.Equal(before, wantSums) {
		t.Fatalf("wide sums %v, want %v", before, wantSums)
	}
	// Merging a narrow vote into a wide one.
	narrow := NewVote(sizes)
	_ = narrow.Add(voters[0])
	if err := v.Merge(narrow); err != nil {
		t.Fatal(err)
	}
	want := naiveVote(sizes, append(slices.Clone(voters), voters[0]))
	for l := range sizes {
		if got := v.Result(l, nil); !slices.Equal(got, want[l]) {
			t.Fatalf("wide+narrow merge: layer %d differs", l)
		}
	}

	// A rejected Add may widen; merging such a vote into a narrow one must still add up.
	a, b := NewVote(sizes), NewVote(sizes)
	for _, vr := range voters[:2] {
		_ = a.Add(vr)
		_ = b.Add(vr)
	}
	maxSum32 = 25 // the next Add (3 voters * 10 > 25) widens layer 0 of b
	bad := slices.Clone(voters[2])
	bad[1] = []uint32{0, 0, 1, 2, 3}
	if err := b.Add(bad); err == nil {
		t.Fatal("bad ranking accepted")
	}
	maxSum32 = 40
	if !b.wide[0] || a.wide[0] {
		t.Fatalf("test setup: a.wide=%v b.wide=%v", a.wide[0], b.wide[0])
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	want = naiveVote(sizes, append(slices.Clone(voters[:2]), voters[:2]...))
	for l := range sizes {
		if got := a.Result(l, nil); !slices.Equal(got, want[l]) {
			t.Fatalf("merge across widths: layer %d differs", l)
		}
	}
	// Reset goes back to 32 bits.
	a.Reset()
	if a.wide[0] || a.Voters() != 0 || slices.ContainsFunc(a.Sums(0, nil), func(x uint64) bool { return x != 0 }) {
		t.Fatal("Reset left state behind")
	}
}

func TestVoteRoundAllocatesNothing(t *testing.T) {
	rng := newRand(17)
	sizes := []int{20000, 3000, 100}
	voters := randVoters(rng, sizes, 5)
	v := NewVote(sizes)
	order := make([]uint32, 20000)
	round := func() {
		v.Reset()
		for _, vr := range voters {
			if err := v.Add(vr); err != nil {
				t.Fatal(err)
			}
		}
		for l := range sizes {
			order = v.Result(l, order)
		}
	}
	round()
	if a := testing.AllocsPerRun(3, round); a != 0 {
		t.Errorf("a warm round allocates %v times", a)
	}
}

func TestVoteTooManyVoters(t *testing.T) {
	v := NewVote([]int{4, 1})
	if v.Layers() != 2 || v.Size(0) != 4 || v.Size(1) != 1 {
		t.Fatalf("Layers/Size: %d %d %d", v.Layers(), v.Size(0), v.Size(1))
	}
	v.voters = 1 << 63 // a count no real round reaches: (voters+1)*3 overflows 64 bits
	if err := v.Add([][]uint32{{0, 1, 2, 3}, {0}}); !errors.Is(err, ErrTooManyVoters) {
		t.Errorf("Add: got %v, want ErrTooManyVoters", err)
	}
	if err := v.Merge(v); !errors.Is(err, ErrTooManyVoters) {
		t.Errorf("Merge: got %v, want ErrTooManyVoters", err)
	}
	if v.voters != 1<<63 {
		t.Errorf("voters changed to %d", v.voters)
	}
}
