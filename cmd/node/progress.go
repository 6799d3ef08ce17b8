package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/fedrank/fedrank/simnet"
)

const barWidth = 24

// progress reports completed rounds on stderr: on a terminal, one line
// redrawn in place; otherwise (a log file, a pipe, a test) one line per round.
type progress struct {
	w     io.Writer
	off   bool
	tty   bool
	now   func() time.Time
	start time.Time // of the run
	first time.Time // when the first round completed
	n     int       // rounds completed
	drawn bool      // a terminal line is showing and needs its newline
}

func newProgress(w io.Writer, quiet bool) *progress {
	return &progress{w: w, off: quiet, tty: isTerminal(w), now: time.Now, start: time.Now()}
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// round is the simnet.Observer's work: it shows round r of total.
func (p *progress) round(r simnet.RoundReport, total int) {
	if p.off {
		return
	}
	now := p.now()
	p.n++
	if p.n == 1 {
		p.first = now
	}
	// Seconds per round: the time between completions, which counts everything
	// a round costs. Until there are two, the round's own wall time, or else
	// the time since the start (which includes loading data).
	var perRound float64
	switch {
	case p.n > 1:
		perRound = now.Sub(p.first).Seconds() / float64(p.n-1)
	case r.WallMs > 0:
		perRound = r.WallMs / 1000
	default:
		perRound = now.Sub(p.start).Seconds()
	}
	eta := time.Duration(perRound * float64(max(total-p.n, 0)) * float64(time.Second))

	if !p.tty {
		fmt.Fprintf(p.w, "round %d/%d acc %.4f loss %.3g accepted %d/%d %.2f s/round ETA %s\n",
			r.Round, total, r.Accuracy, r.Loss, r.Accepted, r.Selected, perRound, fmtETA(eta))
		return
	}
	filled := barWidth
	if total > 0 {
		filled = min(barWidth, barWidth*p.n/total)
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	// \r returns to the line's start; \x1b[K clears what a longer previous line left.
	fmt.Fprintf(p.w, "\rround %d/%d [%s] acc %.4f loss %.3g %.2f s/round ETA %s\x1b[K",
		r.Round, total, bar, r.Accuracy, r.Loss, perRound, fmtETA(eta))
	p.drawn = true
}

// finish ends the terminal line, leaving the last state of the bar in view.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// fmtETA formats d to the second: "22s", "3m05s", "1h02m".
func fmtETA(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	default:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
}
