// Package splitmix is the splitmix64 generator (Steele, Lea, Flood 2014):
// tiny and fully specified, so that a run replays bit for bit from its seed
// whatever the Go version. The simulator and the protocol's peer selection
// draw from it; math/rand/v2's PCG serves the numeric code.
package splitmix

import "math/bits"

const golden = 0x9e3779b97f4a7c15

// Source is a splitmix64 stream. The zero value is a valid stream (seed 0).
type Source struct{ State uint64 }

// Uint64 returns the next value of the stream.
func (s *Source) Uint64() uint64 {
	s.State += golden
	return Finalize(s.State)
}

// Below returns a uniform value in [0, n), n > 0 (Lemire's
// multiply-and-reject, unbiased).
func (s *Source) Below(n uint64) uint64 {
	hi, lo := bits.Mul64(s.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(s.Uint64(), n)
		}
	}
	return hi
}

// Float64 returns a uniform value in [0, 1).
func (s *Source) Float64() float64 { return float64(s.Uint64()>>11) / (1 << 53) }

// Finalize is splitmix64's output function: a bijective mix of z.
func Finalize(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Nth is the n-th value (from 1) of the stream seeded with seed, in O(1).
func Nth(seed, n uint64) uint64 { return Finalize(seed + n*golden) }

// Mix is the first value of the stream seeded with x.
func Mix(x uint64) uint64 { return Finalize(x + golden) }

// Derive hashes a seed, a stream label and any further words (round,
// client, ...) into a new seed; every word is mixed in fully, so order matters.
func Derive(seed, stream uint64, words ...uint64) uint64 {
	h := Mix(seed ^ Mix(stream))
	for _, w := range words {
		h = Mix(h ^ Mix(w))
	}
	return h
}
