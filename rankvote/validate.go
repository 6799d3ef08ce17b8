package rankvote

import (
	"errors"
	"fmt"
)

// ErrInvalidRanking is matched (errors.Is) by every *InvalidRankingError.
var ErrInvalidRanking = errors.New("rankvote: invalid ranking")

// Reasons of an InvalidRankingError.
const (
	ReasonLength    = "wrong length"       // Index holds the length found, N the length wanted
	ReasonRange     = "value out of range" // r[Index] == Value >= N
	ReasonDuplicate = "repeated value"     // r[Index] == Value appears earlier in r
)

// InvalidRankingError says why a ranking is not a permutation of 0..N-1.
type InvalidRankingError struct {
	Layer  int    // layer of the ranking, -1 when not known (Validate, Unpack)
	Reason string // one of the Reason constants
	Index  int    // the offending position in the ranking (for ReasonLength: the length found)
	Value  uint32 // the value at Index
	N      int    // the size the ranking must have
}

func (e *InvalidRankingError) Error() string {
	prefix := "rankvote: invalid ranking: "
	if e.Layer >= 0 {
		prefix = fmt.Sprintf("rankvote: layer %d: invalid ranking: ", e.Layer)
	}
	switch e.Reason {
	case ReasonLength:
		return fmt.Sprintf("%slength %d, want %d", prefix, e.Index, e.N)
	case ReasonRange:
		return fmt.Sprintf("%sindex %d holds value %d, want < %d", prefix, e.Index, e.Value, e.N)
	case ReasonDuplicate:
		return fmt.Sprintf("%sindex %d repeats value %d", prefix, e.Index, e.Value)
	}
	return fmt.Sprintf("%s%s at index %d (value %d, n %d)", prefix, e.Reason, e.Index, e.Value, e.N)
}

// Is makes errors.Is(err, ErrInvalidRanking) true.
func (e *InvalidRankingError) Is(target error) bool { return target == ErrInvalidRanking }

// Validate reports whether r is a permutation of 0..n-1: nil if so, otherwise an
// *InvalidRankingError (Layer -1) naming the first offending position. It
// allocates a bitset of n bits; use a Validator to reuse one.
func Validate(r []uint32, n int) error {
	var v Validator
	return v.Validate(r, n)
}

// Validator checks rankings with a reusable bitset: once it has seen the largest
// n, Validate allocates nothing. The zero value is ready to use; it is not safe
// for concurrent use.
type Validator struct {
	seen []uint64
}

// Validate is the package's Validate with reused memory.
func (v *Validator) Validate(r []uint32, n int) error {
	if err := v.check(r, n); err != nil {
		return err // keep the typed nil out of the interface
	}
	return nil
}

func (v *Validator) check(r []uint32, n int) *InvalidRankingError {
	if len(r) != n {
		return &InvalidRankingError{Layer: -1, Reason: ReasonLength, Index: len(r), N: n}
	}
	seen := v.bitset(n)
	for i, e := range r {
		if uint(e) >= uint(n) {
			return rangeError(i, e, n)
		}
		w := seen[e>>6]
		m := uint64(1) << (e & 63)
		if w&m != 0 {
			return duplicateError(i, e, n)
		}
		seen[e>>6] = w | m
	}
	return nil
}

// bitset returns a cleared bitset of n bits.
func (v *Validator) bitset(n int) []uint64 {
	words := (n + 63) >> 6
	if cap(v.seen) < words {
		v.seen = make([]uint64, words)
	}
	v.seen = v.seen[:words]
	clear(v.seen)
	return v.seen
}

func rangeError(i int, e uint32, n int) *InvalidRankingError {
	return &InvalidRankingError{Layer: -1, Reason: ReasonRange, Index: i, Value: e, N: n}
}

func duplicateError(i int, e uint32, n int) *InvalidRankingError {
	return &InvalidRankingError{Layer: -1, Reason: ReasonDuplicate, Index: i, Value: e, N: n}
}
