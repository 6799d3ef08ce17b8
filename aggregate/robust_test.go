package aggregate

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/internal/selectk"
)

// tiny has 6 weights: layer 0 holds 4, layer 1 holds 2.
var tinyGlobal = tiny.EncodeDenseModel([][]float32{{0, 0, 0, 0}, {0, 0}})

// denseCols builds one dense update per entry of the columns: cols[c][u] is
// weight c of update u.
func denseCols(cols ...[]float32) []Update {
	us := make([]Update, len(cols[0]))
	for u := range us {
		w := [][]float32{make([]float32, 4), make([]float32, 2)}
		for c, col := range cols {
			if c < 4 {
				w[0][c] = col[u]
			} else {
				w[1][c-4] = col[u]
			}
		}
		us[u] = Update{Peer: "p", Samples: int64(1 + u), Payload: tiny.EncodeDenseUpdate(nil, w)}
	}
	return us
}

func denseUpd(w ...float32) Update {
	return Update{Peer: "p", Samples: 1, Payload: tiny.EncodeDenseUpdate(nil, [][]float32{w[:4], w[4:]})}
}

// run begins a round, adds every update (each must be accepted) and decodes
// the result.
func runDense(t *testing.T, a Aggregator, us ...Update) []float32 {
	t.Helper()
	if err := a.Begin(1, tinyGlobal); err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if err := a.Add(u); err != nil {
			t.Fatalf("%s: %v", a.Name(), err)
		}
	}
	m, err := a.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	w, err := tiny.DecodeDenseModel(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Concat(w...)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestMedianHandComputed(t *testing.T) {
	m := must(NewMedian(tiny))
	// Three updates: per weight, the middle value. Weight 3 is the same in all
	// (a tie), weight 5 too.
	us := []Update{
		denseUpd(1, 5, -2, 0, 3, 7),
		denseUpd(2, 1, -1, 0, 9, 7),
		denseUpd(9, 3, -3, 0, 1, 7),
	}
	if got, want := runDense(t, m, us...), []float32{2, 3, -2, 0, 3, 7}; !slices.Equal(got, want) {
		t.Errorf("median of 3: %v, want %v", got, want)
	}
	// A fourth: the mean of the middle two. Sorted per weight:
	// 1 2 4 9 -> 3; 1 3 4 5 -> 3.5; -3 -2 -1 4 -> -1.5; 0 0 0 4 -> 0; 1 3 4 9 -> 3.5; 4 7 7 7 -> 7.
	us = append(us, denseUpd(4, 4, 4, 4, 4, 4))
	if got, want := runDense(t, m, us...), []float32{3, 3.5, -1.5, 0, 3.5, 7}; !slices.Equal(got, want) {
		t.Errorf("median of 4: %v, want %v", got, want)
	}
}

func TestTrimmedMeanHandComputed(t *testing.T) {
	// Five updates, by weight (columns):
	cols := [][]float32{
		{1, 2, 9, 4, 100},              // trim 1: drop 1 and 100 -> (2+4+9)/3 = 5
		{-1, -1, -1, -1, -1},           // all tied -> -1
		{0, 3, 6, -30, 30},             // -30 0 3 6 30 -> 3
		{5, 5, 5, 5, -50},              // -50 5 5 5 5 -> 5
		{1, 2, 3, 4, 5},                // -> 3
		{0.5, 0.25, 0.75, 1000, -1000}, // -> 0.5
	}
	for _, tc := range []struct {
		frac float64
		want []float32
	}{
		{0.2, []float32{5, -1, 3, 5, 3, 0.5}},
		{0.5, []float32{4, -1, 3, 5, 3, 0.5}},     // the median
		{0, []float32{23.2, -1, 1.8, -6, 3, 0.3}}, // the mean
	} {
		a := must(NewTrimmedMean(tiny, tc.frac))
		got := runDense(t, a, denseCols(cols...)...)
		for i := range got {
			if math.Abs(float64(got[i]-tc.want[i])) > 1e-6 {
				t.Errorf("frac %v: %v, want %v", tc.frac, got, tc.want)
				break
			}
		}
	}
	if _, err := NewTrimmedMean(tiny, 0.6); err == nil {
		t.Error("trim fraction 0.6 accepted")
	}
}

func TestMultiKrumHandComputed(t *testing.T) {
	// Weight 0 is 0, 1, 2, 3 and 100 in the five updates; the rest are 0.
	// Squared distances and, with f = 1, the sum over the k-f-2 = 2 nearest:
	//   u0: 1 4 9 10000       -> 5
	//   u1: 1 1 4 9801        -> 2
	//   u2: 4 1 1 9604        -> 2
	//   u3: 9 4 1 9409        -> 5
	//   u4: 10000 9801 9604 9409 -> 19013
	// m = k-f = 4 averages u0..u3: 1.5. m = 1 (Krum) takes u1 (tied with u2,
	// first to arrive): 1.
	zero := []float32{0, 0, 0, 0, 0}
	us := denseCols([]float32{0, 1, 2, 3, 100}, zero, zero, zero, zero, zero)
	for _, tc := range []struct {
		f, m     int
		selected []int
		w0       float32
	}{
		{1, 0, []int{0, 1, 2, 3}, 1.5},
		{-1, 0, []int{0, 1, 2, 3}, 1.5}, // f = (5-3)/2 = 1
		{9, 0, []int{0, 1, 2, 3}, 1.5},  // lowered to 1
		{1, 1, []int{1}, 1},
		{0, 2, []int{1, 2}, 1.5}, // f = 0: 3 nearest: u1 1+1+4=6, u2 4+1+1=6, u0 14, u3 14
		{1, 9, []int{0, 1, 2, 3, 4}, 21.2},
	} {
		k := must(NewMultiKrum(tiny, tc.f, tc.m))
		got := runDense(t, k, us...)
		if !slices.Equal(k.Selected(), tc.selected) || got[0] != tc.w0 {
			t.Errorf("f=%d m=%d: selected %v, weight 0 %v; want %v, %v", tc.f, tc.m, k.Selected(), got[0], tc.selected, tc.w0)
		}
	}
	// Two updates: no neighbours to score, both averaged.
	k := must(NewMultiKrum(tiny, -1, 0))
	if got := runDense(t, k, us[1:3]...); got[0] != 1.5 || len(k.Selected()) != 2 {
		t.Errorf("two updates: %v, selected %v", got, k.Selected())
	}
}

// allAggregators returns one of each aggregator of tiny with the payload
// maker of its update kind.
func allAggregators() []Aggregator {
	return []Aggregator{
		must(NewVote(tiny)), must(NewFilteredVote(tiny)), must(NewMedianVote(tiny)), must(NewTrimmedVote(tiny, 0.2)), must(NewClampedVote(tiny, 0)),
		must(NewFedAvg(tiny)), must(NewMedian(tiny)), must(NewTrimmedMean(tiny, 0.2)), must(NewMultiKrum(tiny, -1, 0)),
	}
}

func isRanking(a Aggregator) bool { return strings.HasPrefix(a.Name(), "vote") }

// sample returns update number i of a fixed set, of a's kind.
func sample(a Aggregator, i int) Update {
	if isRanking(a) {
		orders := [][][]uint32{
			{{3, 1, 0, 2}, {1, 0}}, {{1, 3, 2, 0}, {0, 1}}, {{0, 1, 3, 2}, {1, 0}}, {{2, 0, 1, 3}, {1, 0}},
		}
		o := orders[i%len(orders)]
		return Update{Peer: "p", Samples: 1, Payload: tiny.EncodeFRLUpdate(nil, o)}
	}
	f := float32(i)
	return denseUpd(f, -f, 2*f, 1, f*f, 0.5)
}

func globalOf(a Aggregator) []byte {
	if isRanking(a) {
		return tiny.EncodeFRLModel([][]uint32{{0, 1, 2, 3}, {0, 1}})
	}
	return tinyGlobal
}

func TestEveryAggregatorSingleAndIdentical(t *testing.T) {
	for _, a := range allAggregators() {
		for voters := 1; voters <= 5; voters++ {
			if err := a.Begin(uint64(voters), globalOf(a)); err != nil {
				t.Fatal(err)
			}
			u := sample(a, 3)
			for range voters {
				if err := a.Add(u); err != nil {
					t.Fatalf("%s: %v", a.Name(), err)
				}
			}
			if a.Len() != voters {
				t.Fatalf("%s: Len %d, want %d", a.Name(), a.Len(), voters)
			}
			m, err := a.Finalize()
			if err != nil {
				t.Fatal(err)
			}
			// The new model holds exactly the update's content.
			if isRanking(a) {
				got, _ := tiny.DecodeFRLModel(m, nil)
				want, _ := tiny.DecodeFRLUpdate(u.Payload, nil)
				if !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
					t.Errorf("%s, %d identical voters: %v, want %v", a.Name(), voters, got, want)
				}
			} else {
				got, _ := tiny.DecodeDenseModel(m, nil)
				want, _ := tiny.DecodeDenseUpdate(u.Payload, nil)
				if !slices.Equal(slices.Concat(got...), slices.Concat(want...)) {
					t.Errorf("%s, %d identical updates: %v, want %v", a.Name(), voters, got, want)
				}
			}
		}
		if err := a.Begin(9, globalOf(a)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Finalize(); !errors.Is(err, ErrNoUpdates) {
			t.Errorf("%s: empty round: %v, want ErrNoUpdates", a.Name(), err)
		}
	}
}

func TestEveryAggregatorRejectsBadUpdatesUnchanged(t *testing.T) {
	other := Spec{Seed: 9, Sizes: []int{2, 3, 1}}
	for _, a := range allAggregators() {
		if err := a.Begin(1, globalOf(a)); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := a.Add(sample(a, i)); err != nil {
				t.Fatal(err)
			}
		}
		before, err := a.Finalize()
		if err != nil {
			t.Fatal(err)
		}
		good := sample(a, 0).Payload
		var wrongLen, wrongKind, bad []byte
		if isRanking(a) {
			wrongLen = other.EncodeFRLUpdate(nil, [][]uint32{{0, 1, 2, 3, 4, 5}, {0, 1, 2}})
			wrongKind = denseUpd(1, 2, 3, 4, 5, 6).Payload
			bad = tiny.EncodeFRLUpdate(nil, [][]uint32{{0, 1, 2, 3}, {1, 1}}) // not a permutation
		} else {
			wrongLen = other.EncodeDenseUpdate(nil, [][]float32{{1, 2, 3, 4, 5, 6}, {1, 2, 3}})
			wrongKind = tiny.EncodeFRLUpdate(nil, [][]uint32{{0, 1, 2, 3}, {0, 1}})
			bad = bytes.Clone(good)
			copy(bad[len(bad)-4:], []byte{0, 0, 0xc0, 0x7f}) // the last weight is NaN
		}
		for name, c := range map[string]struct {
			payload []byte
			want    string
		}{
			"wrong length": {wrongLen, "layer 0 has 6 entries, want 4"},
			"wrong kind":   {wrongKind, "magic"},
			"invalid":      {bad, ""},
			"truncated":    {good[:len(good)-1], "want"},
			"empty":        {nil, "shorter than"},
		} {
			err := a.Add(Update{Peer: "mallory", Samples: 1, Payload: c.payload})
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "mallory") {
				t.Errorf("%s, %s: error %v, want ErrMalformed naming the peer and containing %q", a.Name(), name, err, c.want)
			}
			if a.Len() != 3 {
				t.Fatalf("%s, %s: Len %d after a rejected update", a.Name(), name, a.Len())
			}
		}
		after, err := a.Finalize()
		if err != nil || !bytes.Equal(before, after) {
			t.Errorf("%s: the rejected updates changed the result (%v)", a.Name(), err)
		}
		// A global model of the other kind is refused.
		wrong := tinyGlobal
		if !isRanking(a) {
			wrong = tiny.EncodeFRLModel([][]uint32{{0, 1, 2, 3}, {0, 1}})
		}
		if err := a.Begin(2, wrong); err == nil {
			t.Errorf("%s: Begin accepted a model of the other kind", a.Name())
		}
	}
}

func TestRobustVotesRecoverHonestOrder(t *testing.T) {
	// rankvote's hand-computed case (TestTrimmedVoteHandComputed): three honest
	// voters with collective ranking [2 4 0 1 3], two attackers sending its
	// reverse. The Borda count lets edge 3 jump edge 1; the median vote keeps
	// the honest order.
	five := Spec{Seed: 9, Sizes: []int{5, 1}} // one layer of 5 edges
	rev := []uint32{3, 1, 0, 4, 2}
	var us []Update
	for _, r := range [][]uint32{{2, 4, 1, 0, 3}, {4, 2, 0, 3, 1}, {2, 0, 4, 3, 1}, rev, rev} {
		us = append(us, frlUpdate(t, five, r))
	}
	for _, tc := range []struct {
		a    Aggregator
		want []uint32
	}{
		{must(NewVote(five)), []uint32{2, 4, 0, 3, 1}},
		{must(NewMedianVote(five)), []uint32{2, 4, 0, 1, 3}},
		// Distances to the median consensus [2 4 0 1 3]: footrules 2, 4, 4,
		// 12, 12 of 12. Median 1/3, MAD 1/6: the limit, 1/3 + 2.97/6 = 0.83,
		// drops the attackers: the Borda count of the honest three.
		{must(NewFilteredVote(five)), []uint32{2, 4, 0, 1, 3}},
	} {
		if err := tc.a.Begin(1, five.EncodeFRLModel([][]uint32{{0, 1, 2, 3, 4}})); err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			if err := tc.a.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		m, err := tc.a.Finalize()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := five.DecodeFRLModel(m, nil); !slices.Equal(got[0], tc.want) {
			t.Errorf("%s: %v, want %v", tc.a.Name(), got[0], tc.want)
		}
	}
}

func TestNthElementAndmiddle(t *testing.T) {
	rng := rand.New(rand.NewPCG(44, 0))
	for _, n := range []int{1, 2, 5, 16, 17, 25, 40, 100} {
		for range 20 {
			base := make([]float32, n)
			for i := range base {
				base[i] = float32(rng.IntN(n/2+1)) - 3 // many repeats
			}
			sorted := slices.Sorted(slices.Values(base))
			for k := range n {
				a := slices.Clone(base)
				selectk.Nth(a, k)
				if a[k] != sorted[k] {
					t.Fatalf("n=%d k=%d: %v, want %v", n, k, a[k], sorted[k])
				}
				for i := range a {
					if (i < k && a[i] > a[k]) || (i > k && a[i] < a[k]) {
						t.Fatalf("n=%d k=%d: not partitioned: %v", n, k, a)
					}
				}
			}
			for trim := 0; 2*trim < n; trim++ {
				m := slices.Sorted(slices.Values(middle(slices.Clone(base), trim)))
				if !slices.Equal(m, sorted[trim:n-trim]) {
					t.Fatalf("n=%d trim=%d: middle %v, want %v", n, trim, m, sorted[trim:n-trim])
				}
			}
		}
	}
	for _, bad := range []func(){
		func() { selectk.Nth([]float32{1, 2}, 2) },
		func() { middle([]float32{1, 2}, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			bad()
		}()
	}
}

func TestFilteredVoteDropsOutliers(t *testing.T) {
	// rankvote's hand-computed case (TestFilteredVoteHandComputed): five
	// voters near the identity, two sending its reverse, 8 edges.
	eight := Spec{Seed: 9, Sizes: []int{8, 1}}
	rev := []uint32{7, 6, 5, 4, 3, 2, 1, 0}
	v := must(NewFilteredVote(eight))
	if err := v.Begin(1, eight.EncodeFRLModel([][]uint32{rev})); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]uint32{
		{0, 1, 2, 3, 4, 5, 6, 7}, rev, {1, 0, 2, 3, 4, 5, 6, 7}, {0, 1, 3, 2, 4, 5, 6, 7},
		{0, 1, 2, 3, 5, 4, 6, 7}, rev, {0, 1, 2, 3, 4, 5, 7, 6},
	} {
		if err := v.Add(frlUpdate(t, eight, r)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := v.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := eight.DecodeFRLModel(m, nil)
	if !slices.Equal(got[0], []uint32{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("result %v, want the identity", got[0])
	}
	if want := []bool{true, false, true, true, true, false, true}; !slices.Equal(v.Kept(), want) {
		t.Errorf("kept %v, want %v", v.Kept(), want)
	}
}
