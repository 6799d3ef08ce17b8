package node

import (
	"slices"

	"github.com/fedrank/fedrank/internal/splitmix"
)

// SelectUniform is the default SelectFunc: a uniform sample of k members without
// replacement, drawn from a generator seeded by (seed, round), returned in the
// order of members. The generator (internal/splitmix) and the sampling
// (partial Fisher-Yates with unbiased bounded draws) are fully specified, so
// selections never change with the Go version.
func SelectUniform(round uint64, members []PeerID, k int, seed uint64) []PeerID {
	n := len(members)
	k = min(max(k, 0), n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r := splitmix.Source{State: splitmix.Derive(seed, round)}
	for i := 0; i < k; i++ {
		j := i + int(r.Below(uint64(n-i)))
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
