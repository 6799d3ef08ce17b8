package node

import (
	"math/bits"
	"slices"
)

// SelectUniform is the default SelectFunc: a uniform sample of k members without
// replacement, drawn from a generator seeded by (seed, round), returned in the
// order of members. The generator (splitmix64) and the sampling (partial
// Fisher-Yates with unbiased bounded draws) are implemented here, so selections
// never change with the Go version.
func SelectUniform(round uint64, members []PeerID, k int, seed uint64) []PeerID {
	n := len(members)
	k = min(max(k, 0), n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r := splitmix{state: mix(seed, round)}
	for i := 0; i < k; i++ {
		j := i + int(r.below(uint64(n-i)))
		idx[i], idx[j] = idx[j], idx[i]
	}
	pick := idx[:k]
	slices.Sort(pick)
	out := make([]PeerID, k)
	for i, p := range pick {
		out[i] = members[p]
	}
	return out
}

// splitmix is the splitmix64 generator: tiny, fast and fully specified.
type splitmix struct{ state uint64 }

func (s *splitmix) next() uint64 {
	s.state += 0x9e3779b97f4a7c15
	z := s.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// below returns a uniform value in [0, n), n > 0 (Lemire's multiply-and-reject).
func (s *splitmix) below(n uint64) uint64 {
	hi, lo := bits.Mul64(s.next(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(s.next(), n)
		}
	}
	return hi
}

// mix derives a well-spread generator state from two words.
func mix(a, b uint64) uint64 {
	s := splitmix{state: a}
	s.state ^= (&splitmix{state: b}).next()
	return s.next()
}
