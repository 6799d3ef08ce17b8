package rankvote

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		r       []uint32
		n       int
		reason  string // "" for valid
		index   int
		value   uint32
		message string
	}{
		{name: "empty", r: nil, n: 0},
		{name: "single", r: []uint32{0}, n: 1},
		{name: "identity", r: []uint32{0, 1, 2, 3}, n: 4},
		{name: "permutation", r: []uint32{3, 0, 2, 1}, n: 4},
		{name: "too short", r: []uint32{0, 1, 2}, n: 4, reason: ReasonLength, index: 3,
			message: "rankvote: invalid ranking: length 3, want 4"},
		{name: "too long", r: []uint32{0, 1, 2, 3, 4}, n: 4, reason: ReasonLength, index: 5,
			message: "length 5, want 4"},
		{name: "nil for n=2", r: nil, n: 2, reason: ReasonLength, index: 0},
		{name: "duplicate", r: []uint32{1, 0, 1, 2}, n: 4, reason: ReasonDuplicate, index: 2, value: 1,
			message: "rankvote: invalid ranking: index 2 repeats value 1"},
		{name: "out of range", r: []uint32{0, 1, 4, 2}, n: 4, reason: ReasonRange, index: 2, value: 4,
			message: "index 2 holds value 4, want < 4"},
		{name: "huge value", r: []uint32{0, 0xffffffff}, n: 2, reason: ReasonRange, index: 1, value: 0xffffffff},
		{name: "first problem wins", r: []uint32{2, 2, 9}, n: 3, reason: ReasonDuplicate, index: 1, value: 2},
		{name: "range before duplicate", r: []uint32{9, 2, 2}, n: 3, reason: ReasonRange, index: 0, value: 9},
	}
	var v Validator
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, err := range []error{Validate(tc.r, tc.n), v.Validate(tc.r, tc.n)} {
				if tc.reason == "" {
					if err != nil {
						t.Fatalf("unexpected error %v", err)
					}
					continue
				}
				var ire *InvalidRankingError
				if !errors.As(err, &ire) {
					t.Fatalf("error %v (%T), want *InvalidRankingError", err, err)
				}
				if !errors.Is(err, ErrInvalidRanking) {
					t.Errorf("errors.Is(err, ErrInvalidRanking) is false")
				}
				if ire.Reason != tc.reason || ire.Index != tc.index || ire.Value != tc.value ||
					ire.Layer != -1 || ire.N != tc.n {
					t.Errorf("got %+v, want reason %q index %d value %d", *ire, tc.reason, tc.index, tc.value)
				}
				if !strings.Contains(err.Error(), tc.message) {
					t.Errorf("message %q does not contain %q", err.Error(), tc.message)
				}
			}
		})
	}
}

func TestInvalidRankingErrorMessage(t *testing.T) {
	err := &InvalidRankingError{Layer: 1, Reason: ReasonDuplicate, Index: 17, Value: 4, N: 20}
	if got, want := err.Error(), "rankvote: layer 1: invalid ranking: index 17 repeats value 4"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidateRandom(t *testing.T) {
	rng := newRand(7)
	var v Validator
	for trial := range 300 {
		n := rng.IntN(500)
		r := randPerm(rng, n)
		if err := v.Validate(r, n); err != nil {
			t.Fatalf("permutation rejected: %v", err)
		}
		if n < 2 {
			continue
		}
		// Break it: copy one value over another (a duplicate and a missing value).
		i, j := rng.IntN(n), rng.IntN(n)
		if i == j {
			continue
		}
		r[i] = r[j]
		err := v.Validate(r, n)
		var ire *InvalidRankingError
		if !errors.As(err, &ire) || ire.Reason != ReasonDuplicate || ire.Index != max(i, j) || ire.Value != r[i] {
			t.Fatalf("trial %d: got %v, want duplicate at %d", trial, err, max(i, j))
		}
	}
}

func TestValidatorAllocs(t *testing.T) {
	r := randPerm(newRand(8), 100000)
	var v Validator
	_ = v.Validate(r, len(r))
	if a := testing.AllocsPerRun(5, func() { _ = v.Validate(r, len(r)) }); a != 0 {
		t.Errorf("warm Validator allocates %v times", a)
	}
}
