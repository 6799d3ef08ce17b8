package simnet

import "math/bits"

// rng is splitmix64: tiny, fully specified, so that runs replay bit for bit
// whatever the Go version.
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// below returns a uniform value in [0, n), n > 0.
func (r *rng) below(n uint64) uint64 {
	hi, lo := bits.Mul64(r.next(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.next(), n)
		}
	}
	return hi
}

// float64 returns a uniform value in [0, 1).
func (r *rng) float64() float64 { return float64(r.next()>>11) / (1 << 53) }

// Independent random streams derived from a run's seed.
const (
	streamNet uint64 = 0x6e6574 + iota<<32 // jitter and loss
	streamSelect
	streamCrash
	streamTrain
)

// derive hashes a seed, a stream and any further words (round, client, ...)
// into a new seed; every word is mixed in fully, so order matters.
func derive(seed, stream uint64, words ...uint64) uint64 {
	h := mix64(seed ^ mix64(stream))
	for _, w := range words {
		h = mix64(h ^ mix64(w))
	}
	return h
}

// mix64 is the splitmix64 output function of x.
func mix64(x uint64) uint64 {
	r := rng{state: x}
	return r.next()
}
