package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
)

// Runner runs one cell: simnet.Run, or a stand-in in tests.
type Runner func(ctx context.Context, cfg simnet.Config, obs simnet.Observer) (*simnet.Report, error)

// Status is what became of a cell.
type Status string

const (
	Cached Status = "cached"  // a previous sweep ran it: its report is on disk
	Ran    Status = "ran"     // run now, and cached
	Failed Status = "failed"  // the run failed (Err says why)
	NotRun Status = "not run" // interrupted before it finished
)

// Result is a cell and its outcome.
type Result struct {
	Cell
	Status Status
	Report *report.Report // nil unless Cached or Ran
	Err    error
}

// EventKind says what an Event reports.
type EventKind int

const (
	CellCached   EventKind = iota // found on disk; Result is set
	CellStarted                   // Workers is its share of the cores
	CellRound                     // a round finished; Round and Rounds are set
	CellFinished                  // Result is set
)

// Event reports progress. Options.Event receives them one at a time.
type Event struct {
	Kind    EventKind
	Cell    Cell
	Workers int
	Round   report.RoundReport
	Rounds  int // of the cell
	Result  *Result
}

// Options of Execute.
type Options struct {
	// Dir holds the cache: the report of each finished cell in
	// Dir/cells/<hash>.json.
	Dir string
	// Parallel is the number of cells run at once (0 = GOMAXPROCS).
	Parallel int
	// Cores are shared among the running cells as their Config.Workers
	// (0 = GOMAXPROCS); a cell whose config sets workers keeps them.
	Cores int
	// Run runs a cell (nil = simnet.Run).
	Run Runner
	// Event, if set, sees the sweep's progress, one event at a time.
	Event func(Event)
}

// CellsDir is the cache directory of a sweep's output directory.
func CellsDir(dir string) string { return filepath.Join(dir, "cells") }

// CachePath is the cache file of a cell.
func CachePath(dir string, c Cell) string { return filepath.Join(CellsDir(dir), c.Hash+".json") }

// LoadCached returns the cached report of c, if dir holds a readable one
// whose config hashes to c's hash.
func LoadCached(dir string, c Cell) (*report.Report, bool) {
	b, err := os.ReadFile(CachePath(dir, c))
	if err != nil {
		return nil, false
	}
	var r report.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, false
	}
	cfg, err := report.ConfigAs[simnet.Config](&r)
	if err != nil || Hash(cfg) != c.Hash {
		return nil, false
	}
	r.Config = cfg
	return &r, true
}

// Execute runs the cells that dir does not hold yet, Options.Parallel at
// a time, and caches each as it finishes. A failed cell leaves an error in
// its Result and the others go on; cancelling ctx stops the sweep, the
// cells not finished being NotRun. The results are in cells' order.
func Execute(ctx context.Context, cells []Cell, o Options) []Result {
	run := o.Run
	if run == nil {
		run = simnet.Run
	}
	parallel, cores := o.Parallel, o.Cores
	if parallel <= 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	if cores <= 0 {
		cores = runtime.GOMAXPROCS(0)
	}
	var evMu sync.Mutex
	emit := func(e Event) {
		if o.Event != nil {
			evMu.Lock()
			defer evMu.Unlock()
			o.Event(e)
		}
	}

	results := make([]Result, len(cells))
	var pending []int
	for i, c := range cells {
		results[i] = Result{Cell: c, Status: NotRun}
		if r, ok := LoadCached(o.Dir, c); ok {
			results[i].Status, results[i].Report = Cached, r
			emit(Event{Kind: CellCached, Cell: c, Result: &results[i]})
			continue
		}
		pending = append(pending, i)
	}
	if len(pending) == 0 {
		return results
	}
	if err := os.MkdirAll(CellsDir(o.Dir), 0o755); err != nil {
		for _, i := range pending {
			results[i].Status, results[i].Err = Failed, err
		}
		return results
	}

	var (
		mu        sync.Mutex
		unstarted = len(pending) // cells not started yet
		running   int
	)
	// share is the cores a cell starting now gets: all of them divided among
	// the cells that can run from now on, so that the last cells of a sweep,
	// when fewer than Parallel are left, use the cores the others freed.
	share := func() int {
		mu.Lock()
		defer mu.Unlock()
		unstarted--
		running++
		return max(1, cores/min(parallel, running+unstarted))
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, len(pending)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				res := &results[i]
				if ctx.Err() != nil {
					res.Err = ctx.Err()
					continue
				}
				cfg := res.Config
				w := share()
				if cfg.Workers == 0 {
					cfg.Workers = w
				}
				emit(Event{Kind: CellStarted, Cell: res.Cell, Workers: cfg.Workers})
				obs := func(rr simnet.RoundReport, total int) {
					emit(Event{Kind: CellRound, Cell: res.Cell, Round: rr, Rounds: total})
				}
				rep, err := run(ctx, cfg, obs)
				switch {
				case err != nil && ctx.Err() != nil:
					res.Status, res.Err = NotRun, ctx.Err()
				case err != nil:
					res.Status, res.Err = Failed, err
				case rep == nil:
					res.Status, res.Err = Failed, fmt.Errorf("the run returned no report")
				default:
					if err := writeCell(o.Dir, res.Cell, rep); err != nil {
						res.Status, res.Err = Failed, err
					} else {
						res.Status, res.Report = Ran, rep
					}
				}
				mu.Lock()
				running--
				mu.Unlock()
				emit(Event{Kind: CellFinished, Cell: res.Cell, Result: res})
			}
		}()
	}
	for _, i := range pending {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return results
}

// writeCell caches a finished cell's report, atomically: a reader (or a
// resumed sweep) sees the whole file or none.
func writeCell(dir string, c Cell, r *report.Report) error {
	var buf bytes.Buffer
	if err := report.WriteJSON(&buf, r); err != nil {
		return err
	}
	return writeAtomic(CachePath(dir, c), buf.Bytes())
}

func writeAtomic(path string, data []byte) error { return report.WriteFileAtomic(path, data) }
