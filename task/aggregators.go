package task

import (
	"fmt"
	"strings"

	"github.com/fedrank/fedrank/aggregate"
)

// DefaultTrimFraction is the fraction of the values that "trimmed-mean"
// drops at each end: 10 of a round's 25 updates in the reference setting.
// A trimmed mean holds only while attackers are at most that fraction of a
// round; with 0.2, the rounds of a 20% attack that draw 6 or more attackers
// (about 2 in 5) let them through, and 20% sign flipping costs it 12 points
// (BENCHMARKS.md, "Robustness").
const DefaultTrimFraction = 0.4

// namedAggregator is a registry entry of a task's aggregators.
type namedAggregator struct {
	name string
	make func(aggregate.Spec) (aggregate.Aggregator, error)
}

func aggregatorNames(list []namedAggregator) []string {
	names := make([]string, len(list))
	for i, a := range list {
		names[i] = a.name
	}
	return names
}

// newAggregator builds the aggregator called name ("" = the first of list).
func newAggregator(task string, list []namedAggregator, name string, spec aggregate.Spec) (aggregate.Aggregator, error) {
	if name == "" {
		name = list[0].name
	}
	for _, a := range list {
		if a.name == name {
			return a.make(spec)
		}
	}
	return nil, fmt.Errorf("task %s: unknown aggregator %q (have: %s)", task, name, strings.Join(aggregatorNames(list), ", "))
}
