// Package selectk finds order statistics in place (quickselect): the
// threshold of a supermask layer, the median and trimmed ranges of robust
// aggregators.
package selectk

import "fmt"

// Nth reorders a so that a[k] is the value a sort would put there, with
// nothing greater before it and nothing smaller after it (quickselect with
// median-of-three pivots, insertion sort below 16 values). Deterministic.
// NaNs are not supported. It panics unless 0 <= k < len(a).
func Nth[T uint32 | uint64 | float32 | float64](a []T, k int) {
	if k < 0 || k >= len(a) {
		panic(fmt.Sprintf("selectk: Nth: index %d of %d values", k, len(a)))
	}
	for len(a) > 16 {
		m := len(a) / 2
		// Order a[0] <= a[m] <= a[last]; a[m] is the pivot, and the ends stop
		// the scans below.
		last := len(a) - 1
		if a[m] < a[0] {
			a[m], a[0] = a[0], a[m]
		}
		if a[last] < a[m] {
			a[last], a[m] = a[m], a[last]
			if a[m] < a[0] {
				a[m], a[0] = a[0], a[m]
			}
		}
		p := a[m]
		i, j := 0, last
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		// Now a[:j+1] <= p <= a[i:], and a[j+1:i] == p.
		switch {
		case k <= j:
			a = a[:j+1]
		case k >= i:
			a, k = a[i:], k-i
		default:
			return
		}
	}
	for i := 1; i < len(a); i++ {
		x := a[i]
		j := i
		for ; j > 0 && a[j-1] > x; j-- {
			a[j] = a[j-1]
		}
		a[j] = x
	}
}
