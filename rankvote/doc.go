// Package rankvote holds the integer machinery of Federated Rank Learning (FRL):
// turning scores into rankings, checking and packing rankings for the wire, the
// streaming Borda vote that merges the rankings of a round, and turning the vote
// back into a model (scores and masks).
//
// Everything here is pure and deterministic: no goroutines, no I/O, no clock,
// no randomness. Equal inputs give equal outputs bit for bit, and every tie is
// broken by the lower index, so runs replay exactly. Types with scratch memory
// (Sorter, Validator, Vote) reuse it: on the hot path they allocate nothing once
// warm. None of them is safe for concurrent use; give each goroutine its own
// (partial votes are additive: see Vote.Merge).
//
// A ranking of a layer of n edges is a permutation of 0..n-1 held as []uint32:
// r[i] is the edge with the i-th lowest score, so the position of edge e is the i
// with r[i] == e. n is at most MaxSize.
package rankvote

import "math"

// MaxSize is the largest number of edges a ranking may have: indices are uint32
// and n itself must fit one (and an int, on 32-bit platforms).
const MaxSize = min(math.MaxUint32, math.MaxInt)
