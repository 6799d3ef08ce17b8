package aggregate

import (
	"fmt"
	"slices"
	"testing"
)

func named(us []Update, names ...string) []Update {
	out := slices.Clone(us)
	for i := range out {
		out[i].Peer = names[i]
	}
	return out
}

func TestFilteredVoteReportsDroppedVoters(t *testing.T) {
	four := Spec{Seed: 4, Sizes: []int{4, 1}}
	for _, mk := range []func() interface {
		Aggregator
		DropReporter
		Kept() []bool
	}{
		func() interface {
			Aggregator
			DropReporter
			Kept() []bool
		} {
			return must(NewFilteredVote(four))
		},
		// vote-clamp filters the same way.
		func() interface {
			Aggregator
			DropReporter
			Kept() []bool
		} {
			return must(NewClampedVote(four, 0))
		},
	} {
		v := mk()
		t.Run(v.Name(), func(t *testing.T) { testReportsDroppedVoters(t, four, v) })
	}
}

func testReportsDroppedVoters(t *testing.T, four Spec, v interface {
	Aggregator
	DropReporter
	Kept() []bool
}) {
	// 4 edges, 5 voters. Per edge the median position is its index, so the
	// consensus is the identity. Footrule distances over floor(16/2) = 8:
	// id 0, one swap 2/8, the reverse 8/8. Sorted 0 0 1/4 1/4 1: median 1/4,
	// absolute deviations 0 0 1/4 1/4 3/4: MAD 1/4, limit 1/4 + 2.9652/4 =
	// 0.991: only the reverse (distance 1) is dropped.
	id, rev := []uint32{0, 1, 2, 3}, []uint32{3, 2, 1, 0}
	if err := v.Begin(1, four.EncodeFRLModel([][]uint32{id})); err != nil {
		t.Fatal(err)
	}
	if got := v.Dropped(); got != nil {
		t.Errorf("dropped %v before Finalize", got)
	}
	voters := []struct {
		peer  string
		order []uint32
	}{
		{"h0", id}, {"h1", []uint32{1, 0, 2, 3}}, {"bad", []uint32{0, 0, 1, 2}}, {"h2", id},
		{"a0", rev}, {"h3", []uint32{0, 1, 3, 2}},
	}
	for _, vr := range voters {
		u := frlUpdate(t, four, vr.order)
		u.Peer = vr.peer
		if err := v.Add(u); (err != nil) != (vr.peer == "bad") {
			t.Fatalf("%s: %v", vr.peer, err)
		}
	}
	if _, err := v.Finalize(); err != nil {
		t.Fatal(err)
	}
	if got := v.Dropped(); !slices.Equal(got, []string{"a0"}) {
		t.Errorf("dropped %v, want [a0] (kept %v)", got, v.Kept())
	}
	// The caller owns the slice.
	v.Dropped()[0] = "x"
	if got := v.Dropped(); !slices.Equal(got, []string{"a0"}) {
		t.Errorf("Dropped returned its own slice: now %v", got)
	}
	// Begin keeps the last round's (node.Machine begins the next round in
	// the step that finalizes one); a round without outliers drops nobody.
	if err := v.Begin(2, four.EncodeFRLModel([][]uint32{id})); err != nil {
		t.Fatal(err)
	}
	if got := v.Dropped(); !slices.Equal(got, []string{"a0"}) {
		t.Errorf("dropped %v after Begin, want the last Finalize's [a0]", got)
	}
	for _, p := range []string{"h0", "h1"} {
		u := frlUpdate(t, four, id)
		u.Peer = p
		if err := v.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Finalize(); err != nil {
		t.Fatal(err)
	}
	if got := v.Dropped(); got != nil {
		t.Errorf("dropped %v from identical voters", got)
	}
	// A Finalize without updates drops nothing.
	v.Begin(3, four.EncodeFRLModel([][]uint32{id}))
	if _, err := v.Finalize(); err != ErrNoUpdates || v.Dropped() != nil {
		t.Errorf("empty round: %v, dropped %v", err, v.Dropped())
	}
}

func TestMultiKrumReportsDroppedUpdates(t *testing.T) {
	// TestMultiKrumHandComputed's five updates: weight 0 is 0, 1, 2, 3, 100.
	zero := []float32{0, 0, 0, 0, 0}
	us := named(denseCols([]float32{0, 1, 2, 3, 100}, zero, zero, zero, zero, zero), "u0", "u1", "u2", "u3", "u4")
	for _, tc := range []struct {
		f, m    int
		dropped []string
	}{
		{1, 0, []string{"u4"}},                   // m = k-f = 4: the outlier is left out
		{1, 1, []string{"u0", "u2", "u3", "u4"}}, // Krum: u1 alone
		{0, 2, []string{"u0", "u3", "u4"}},       // u1 and u2
		{1, 9, nil},                              // every update averaged
	} {
		k := must(NewMultiKrum(tiny, tc.f, tc.m))
		runDense(t, k, us...)
		if got := k.Dropped(); !slices.Equal(got, tc.dropped) {
			t.Errorf("f=%d m=%d: dropped %v, want %v", tc.f, tc.m, got, tc.dropped)
		}
	}
	// A rejected update is not named; Begin keeps the last round's until
	// the next Finalize.
	k := must(NewMultiKrum(tiny, 1, 0))
	if err := k.Begin(1, tinyGlobal); err != nil {
		t.Fatal(err)
	}
	for i, u := range us {
		if i == 2 {
			if err := k.Add(Update{Peer: "junk", Samples: 1, Payload: []byte("junk")}); err == nil {
				t.Fatal("junk accepted")
			}
		}
		if err := k.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.Finalize(); err != nil {
		t.Fatal(err)
	}
	if got := k.Dropped(); !slices.Equal(got, []string{"u4"}) {
		t.Errorf("dropped %v, want [u4]", got)
	}
	if err := k.Begin(2, tinyGlobal); err != nil || !slices.Equal(k.Dropped(), []string{"u4"}) {
		t.Errorf("after Begin: dropped %v (%v)", k.Dropped(), err)
	}
	runDense(t, k, us[:3]...) // 0, 1, 2: f = 0, all averaged
	if got := k.Dropped(); got != nil {
		t.Errorf("next round: dropped %v, want none", got)
	}
	k.Begin(3, tinyGlobal)
	if _, err := k.Finalize(); err != ErrNoUpdates || k.Dropped() != nil {
		t.Errorf("empty round: %v, dropped %v", err, k.Dropped())
	}
}

// Only the aggregators that leave whole updates out report drops.
func TestDropReporters(t *testing.T) {
	for _, a := range allAggregators() {
		_, ok := a.(DropReporter)
		if want := a.Name() == "vote-robust" || a.Name() == "vote-clamp" || a.Name() == "multi-krum"; ok != want {
			t.Errorf("%s: DropReporter %v, want %v", a.Name(), ok, want)
		}
		if r, ok := a.(DropReporter); ok {
			for i := range 4 {
				if i == 0 {
					if err := a.Begin(1, globalOf(a)); err != nil {
						t.Fatal(err)
					}
				}
				u := sample(a, i)
				u.Peer = fmt.Sprint("p", i)
				if err := a.Add(u); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := a.Finalize(); err != nil {
				t.Fatal(err)
			}
			if d := r.Dropped(); len(d) >= 4 {
				t.Errorf("%s dropped all of %v", a.Name(), d)
			}
		}
	}
}
