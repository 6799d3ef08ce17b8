package splitmix

import "testing"

// The published splitmix64 sequence for seed 1234567.
func TestKnownSequence(t *testing.T) {
	s := Source{State: 1234567}
	for i, want := range []uint64{6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821} {
		if got := s.Uint64(); got != want {
			t.Fatalf("value %d: %d, want %d", i, got, want)
		}
	}
}

func TestNth(t *testing.T) {
	s := Source{State: 99}
	for n := uint64(1); n <= 5; n++ {
		if got, want := Nth(99, n), s.Uint64(); got != want {
			t.Fatalf("Nth(99, %d) = %d, the stream gives %d", n, got, want)
		}
	}
}

func TestBelowAndFloat64(t *testing.T) {
	s := Source{State: 7}
	counts := make([]int, 5)
	for range 50000 {
		v := s.Below(5)
		if v >= 5 {
			t.Fatalf("Below(5) = %d", v)
		}
		counts[v]++
		if f := s.Float64(); f < 0 || f >= 1 {
			t.Fatalf("Float64 = %v", f)
		}
	}
	for v, c := range counts {
		if c < 9500 || c > 10500 {
			t.Fatalf("Below(5) gave %d %d times of 50000", v, c)
		}
	}
}

func TestDerive(t *testing.T) {
	if Derive(1, 2) == Derive(2, 1) || Derive(1, 2, 3) == Derive(1, 2) || Derive(1, 2, 3, 4) == Derive(1, 2, 4, 3) {
		t.Fatal("Derive collides on reordered or extra words")
	}
	if Derive(5, 6, 7) != Derive(5, 6, 7) {
		t.Fatal("Derive is not a function of its inputs")
	}
}
