package rankvote_test

import (
	"fmt"

	"github.com/fedrank/fedrank/rankvote"
)

// One FRL round on a one-layer model of 4 edges: clients upload their rankings
// packed, the server votes, and the next global model is a permutation of the
// initial score values.
func Example() {
	sortedInit := []float32{-0.4, -0.1, 0.2, 0.3} // the layer's initial values, ascending
	uploads := [][]uint32{{0, 1, 2, 3}, {0, 1, 3, 2}, {3, 0, 2, 1}}

	var s rankvote.Sorter
	vote := rankvote.NewVote([]int{4})
	var decoded []uint32
	for _, r := range uploads {
		wire := rankvote.Pack(nil, r, 4) // 2 bits per edge: 1 byte
		var err error
		if decoded, err = rankvote.Unpack(wire, 4, decoded); err != nil {
			panic(err)
		}
		if err := vote.Add([][]uint32{decoded}); err != nil {
			panic(err)
		}
	}
	order := vote.Result(0, nil)
	scores := rankvote.ScoresFromRanking(order, sortedInit, nil)
	mask := rankvote.MaskFromScores(scores, rankvote.KeepCount(4, 0.5), nil)
	fmt.Println("global ranking:", order)
	fmt.Println("scores:", scores)
	fmt.Println("mask:", mask)
	fmt.Println("re-ranked:", s.Argsort(scores, nil))
	// Output:
	// global ranking: [0 1 3 2]
	// scores: [-0.4 -0.1 0.3 0.2]
	// mask: [true false true false]
	// re-ranked: [0 1 3 2]
}
