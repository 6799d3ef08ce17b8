package task

import (
	"runtime"
	"sync"

	"github.com/fedrank/fedrank/model"
)

// evalChunk is the number of test images scored as one unit. Chunks are
// summed in order, so the loss does not depend on how many goroutines ran.
const evalChunk = 500

// evaluate scores effective weights on the test set with up to GOMAXPROCS
// goroutines.
func evaluate(pool *sync.Pool, eff [][]float32, colsum []float32, test *model.Inputs) Eval {
	chunks := (test.N + evalChunk - 1) / evalChunk
	correct := make([]int, chunks)
	loss := make([]float64, chunks)
	var next sync.Mutex
	k := 0
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), chunks) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := pool.Get().(*model.Evaluator)
			defer pool.Put(ev)
			for {
				next.Lock()
				c := k
				k++
				next.Unlock()
				if c >= chunks {
					return
				}
				lo := c * evalChunk
				correct[c], loss[c] = ev.Run(eff, colsum, test, lo, min(lo+evalChunk, test.N))
			}
		}()
	}
	wg.Wait()
	var e Eval
	n := 0
	for c := range chunks {
		n += correct[c]
		e.Loss += loss[c]
	}
	if test.N > 0 {
		e.Accuracy = float64(n) / float64(test.N)
		e.Loss /= float64(test.N)
	}
	e.Samples = test.N
	return e
}
