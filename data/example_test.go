package data_test

import (
	"fmt"
	"log"
	"slices"

	"github.com/fedrank/fedrank/data"
)

// Load MNIST from wherever it is and give 1000 clients a Dirichlet(1.0) share
// of the training set, as the FRL reference does.
func Example() {
	dir, err := data.MNISTDir("") // or the value of a --data flag
	if err != nil {
		log.Fatal(err)
	}
	train, test, err := data.LoadMNIST(dir)
	if err != nil {
		log.Fatal(err)
	}
	spec, err := data.ParseSpec("dirichlet:1.0")
	if err != nil {
		log.Fatal(err)
	}
	p, err := spec.Split(train.Labels, train.Classes, 1000, 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(train.N, test.N, len(p), slices.Min(p.Sizes()) > 0)
	// Output: 60000 10000 1000 true
}

func ExampleParseSpec() {
	for _, s := range []string{"iid", "dirichlet:1", "shards:2", "dirichlet:0"} {
		spec, err := data.ParseSpec(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%-13s kind=%s alpha=%g shards=%d\n", spec, spec.Kind, spec.Alpha, spec.Shards)
	}
	// Output:
	// iid           kind=iid alpha=0 shards=0
	// dirichlet:1.0 kind=dirichlet alpha=1 shards=0
	// shards:2      kind=shards alpha=0 shards=2
	// data: partition "dirichlet:0": dirichlet alpha must be > 0, got 0
}
