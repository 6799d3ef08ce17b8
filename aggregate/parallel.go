package aggregate

import (
	"runtime"
	"sync"
)

// minParallel is the fewest coordinates (or updates × coordinates) worth
// splitting over goroutines.
const minParallel = 1 << 14

// parts is how many ranges work of size n is split into with workers
// goroutines (0: GOMAXPROCS).
func parts(workers, n int) int {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if n < minParallel {
		return 1
	}
	return max(min(workers, n/(minParallel/4)), 1)
}

// parallel runs f(i, lo, hi) for the parts i of [0, n) cut into p nearly
// equal ranges, part 0 on the calling goroutine, and waits for all.
func parallel(p, n int, f func(i, lo, hi int)) {
	if p <= 1 {
		f(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < p; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, n*i/p, n*(i+1)/p)
		}()
	}
	f(0, 0, n/p)
	wg.Wait()
}
