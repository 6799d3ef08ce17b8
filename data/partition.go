package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Partition assigns training examples to clients: p[c] lists the indices
// into the training Set that client c holds. A partitioner never gives an
// index to two clients.
type Partition [][]int

// Sizes returns the number of examples of each client.
func (p Partition) Sizes() []int {
	s := make([]int, len(p))
	for c, idx := range p {
		s[c] = len(idx)
	}
	return s
}

// pcgStream is the second PCG word of every partitioner's generator; the seed
// is the first. Fixed so that a seed names one partition forever.
const pcgStream = 0xda7a_5eed_f00d_cafe

func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, pcgStream))
}

// IID shuffles the indices 0..n-1 and cuts them into clients runs as even as
// possible: the first n%clients clients get one example more than the rest.
// It covers every index exactly once and needs 0 < clients <= n.
func IID(n, clients int, seed uint64) (Partition, error) {
	if clients <= 0 {
		return nil, fmt.Errorf("data: iid split: clients must be > 0, got %d", clients)
	}
	if n < clients {
		return nil, fmt.Errorf("data: iid split: %d clients but only %d examples; each client needs at least one", clients, n)
	}
	perm := newRand(seed).Perm(n)
	p := make(Partition, clients)
	q, rem := n/clients, n%clients
	start := 0
	for c := range p {
		end := start + q
		if c < rem {
			end++
		}
		p[c] = perm[start:end:end]
		start = end
	}
	return p, nil
}

// Dirichlet splits labelled examples among clients with the label skew of a
// symmetric Dirichlet distribution, exactly as the FRL reference does: for
// each class in label order it takes the class's indices in dataset order,
// shuffles them, draws proportions d ~ Dir(alpha, ..., alpha) over the
// clients, and lets client u = 0, 1, 2, ... take the next
// round(|class| * d_u) of them (rounding half to even, as numpy does) until
// the class runs out.
//
// Hence a client's indices are grouped by class, later clients may get less
// of a class than their share or none, and, because the rounded shares need
// not add up to |class|, some examples may go to no client: unlike IID and
// Shards, Dirichlet does not cover every index. With the 60,000 MNIST
// images, 1000 clients and alpha = 1 that is 70 to 140 images (0.1-0.25%),
// and no client is empty for any seed we tried (sizes: min 9 to 17, median
// 58 or 59, max 122 to 150; the reference's run: 12, 58, 139).
// Small alpha concentrates each class on few clients, and clients may end up
// empty; large alpha approaches an IID split.
//
// Every label must be below classes; 0 < clients <= len(labels); alpha must
// be positive and finite.
func Dirichlet(labels []uint8, classes, clients int, alpha float64, seed uint64) (Partition, error) {
	switch {
	case clients <= 0:
		return nil, fmt.Errorf("data: dirichlet split: clients must be > 0, got %d", clients)
	case !(alpha > 0):
		return nil, fmt.Errorf("data: dirichlet split: alpha must be > 0, got %v", alpha)
	case math.IsInf(alpha, 1):
		return nil, fmt.Errorf("data: dirichlet split: alpha must be finite")
	case len(labels) < clients:
		return nil, fmt.Errorf("data: dirichlet split: %d clients but only %d examples", clients, len(labels))
	}
	byClass, _, err := groupByClass(labels, classes)
	if err != nil {
		return nil, fmt.Errorf("data: dirichlet split: %w", err)
	}

	r := newRand(seed)
	p := make(Partition, clients)
	d := make([]float64, clients)
	for _, idx := range byClass {
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		sampleDirichlet(r, alpha, d)
		size := float64(len(idx))
		for u := range p {
			k := min(int(math.RoundToEven(size*d[u])), len(idx))
			p[u] = append(p[u], idx[:k]...)
			idx = idx[k:]
		}
	}
	for u := range p {
		p[u] = slices.Clip(p[u])
	}
	return p, nil
}

// Shards is the pathological non-IID split of McMahan et al. (2017): sort the
// examples by label (stably, so dataset order within a label), cut them into
// clients*shardsPerClient contiguous shards of equal size (the first n%shards
// shards one example longer), and deal each client shardsPerClient shards at
// random. A client's shards are listed in label order. It covers every index
// exactly once and needs at least one example per shard.
func Shards(labels []uint8, clients, shardsPerClient int, seed uint64) (Partition, error) {
	n := len(labels)
	switch {
	case clients <= 0:
		return nil, fmt.Errorf("data: shards split: clients must be > 0, got %d", clients)
	case shardsPerClient <= 0:
		return nil, fmt.Errorf("data: shards split: shards per client must be > 0, got %d", shardsPerClient)
	case clients > n/shardsPerClient:
		return nil, fmt.Errorf("data: shards split: %d clients x %d shards needs at least as many examples, have %d", clients, shardsPerClient, n)
	}
	_, sorted, err := groupByClass(labels, 256)
	if err != nil {
		return nil, fmt.Errorf("data: shards split: %w", err)
	}

	shards := clients * shardsPerClient
	q, rem := n/shards, n%shards
	start := func(s int) int { return s*q + min(s, rem) }

	deal := newRand(seed).Perm(shards)
	p := make(Partition, clients)
	backing := make([]int, 0, n)
	for c := range p {
		mine := deal[c*shardsPerClient : (c+1)*shardsPerClient]
		slices.Sort(mine)
		from := len(backing)
		for _, s := range mine {
			backing = append(backing, sorted[start(s):start(s+1)]...)
		}
		p[c] = backing[from:len(backing):len(backing)]
	}
	return p, nil
}

// groupByClass returns, for each class c < classes, the indices of the
// examples labelled c in dataset order, and all the indices sorted stably by
// label: the groups are consecutive views of that one slice.
func groupByClass(labels []uint8, classes int) (groups [][]int, sorted []int, err error) {
	if classes <= 0 || classes > 256 {
		return nil, nil, fmt.Errorf("classes must be in 1..256, got %d", classes)
	}
	counts := make([]int, classes)
	for i, l := range labels {
		if int(l) >= classes {
			return nil, nil, fmt.Errorf("label %d of example %d is not below the number of classes, %d", l, i, classes)
		}
		counts[l]++
	}
	sorted = make([]int, len(labels))
	groups = make([][]int, classes)
	off := 0
	for c, k := range counts {
		groups[c] = sorted[off : off : off+k]
		off += k
	}
	for i, l := range labels {
		groups[l] = append(groups[l], i)
	}
	return groups, sorted, nil
}
