package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// maxTableRows is the number of rounds up to which Table shows every round;
// longer runs are thinned to about that many rows.
const maxTableRows = 30

// Table writes the human summary of r: the effective settings, a per-round
// table and the totals.
func Table(w io.Writer, r *Report) error {
	c := settingsOf(r)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\t%s\taggregator\t%s\n", r.Scenario, orDash(c.Aggregator))
	fmt.Fprintf(tw, "peers\t%d\tper round\t%d\n", c.Peers, c.PerRound)
	fmt.Fprintf(tw, "rounds\t%d\tpartition\t%s\n", c.Rounds, orDash(c.Partition))
	fmt.Fprintf(tw, "seed\t%d\tnet\t%s\n", r.Seed, orDash(c.Net))
	if c.Attackers > 0 || c.Crash > 0 {
		fmt.Fprintf(tw, "attackers\t%s\tcrash\t%g\n", attackLabel(c), c.Crash)
	}
	if r.Model.Name != "" {
		fmt.Fprintf(tw, "model\t%s (%d params)\n", r.Model.Name, r.Model.Params)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)

	if len(r.Rounds) == 0 {
		fmt.Fprintln(w, "no rounds completed")
	} else {
		every := tableStep(len(r.Rounds))
		faults := 0 // rounds a fault hit
		for _, rr := range r.Rounds {
			if len(rr.Faults) > 0 {
				faults++
			}
		}
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		header := "round\taccuracy\tloss\taccepted/selected\trejected\tKB up\tKB down\tsim ms\twall ms\t"
		if faults > 0 {
			// The marker column: the faults that hit the round, "-" for none.
			header += "faults\t"
		}
		fmt.Fprintln(tw, header)
		for i, rr := range r.Rounds {
			// Rounds a fault hit are always shown, thinned or not.
			if !(i == 0 || i == len(r.Rounds)-1 || rr.Round%uint64(every) == 0 || len(rr.Faults) > 0) {
				continue
			}
			fmt.Fprintf(tw, "%d\t%.4f\t%.4f\t%d/%d\t%d\t%.1f\t%.1f\t%.0f\t%.0f\t",
				rr.Round, rr.Accuracy, rr.Loss, rr.Accepted, rr.Selected, rr.Rejected,
				float64(rr.BytesUp)/1e3, float64(rr.BytesDown)/1e3, rr.SimMs, rr.WallMs)
			if faults > 0 {
				fmt.Fprintf(tw, "%s\t", orDash(strings.Join(rr.Faults, ",")))
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		switch {
		case every > 1 && faults > 0:
			fmt.Fprintf(w, "(every %d rounds shown, the first and last, and those a fault hit; rounds.csv has them all)\n", every)
		case every > 1:
			fmt.Fprintf(w, "(every %d rounds shown, and the first and last; rounds.csv has them all)\n", every)
		}
		if faults > 0 {
			fmt.Fprintf(w, "faults hit %d of %d rounds (the faults column)\n", faults, len(r.Rounds))
		}
	}
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "start accuracy\t%.4f (the model before round 1)\n", r.InitialAccuracy)
	fmt.Fprintf(tw, "final accuracy\t%.4f\n", r.FinalAccuracy)
	if best, ok := bestRound(r.Rounds); ok {
		fmt.Fprintf(tw, "best accuracy\t%.4f (round %d)\n", r.BestAccuracy, best)
	} else {
		fmt.Fprintf(tw, "best accuracy\t%.4f\n", r.BestAccuracy)
	}
	fmt.Fprintf(tw, "bytes up\t%s (%s per accepted update)\n", HumanBytes(r.BytesUpTotal), HumanBytes(int64(r.BytesUpPerUpdate)))
	fmt.Fprintf(tw, "bytes down\t%s\n", HumanBytes(r.BytesDownTotal))
	perRound := ""
	if n := len(r.Rounds); n > 0 {
		perRound = fmt.Sprintf(" (%.2f s/round)", r.WallSeconds/float64(n))
	}
	fmt.Fprintf(tw, "wall time\t%.1f s%s\n", r.WallSeconds, perRound)
	fmt.Fprintf(tw, "model hash\t%s\n", orDash(r.Model.Hash))
	return tw.Flush()
}

// tableStep is the k of "every k-th round": 1 up to maxTableRows rounds, else
// the smallest of 2, 5, 10, 20, 50, ... that keeps the table to about 25 rows.
func tableStep(n int) int {
	if n <= maxTableRows {
		return 1
	}
	for scale := 1; ; scale *= 10 {
		for _, m := range []int{2, 5, 10} {
			if k := m * scale; n/k <= 25 {
				return k
			}
		}
	}
}

// bestRound is the round of the highest accuracy (the first, on a tie).
func bestRound(rounds []RoundReport) (uint64, bool) {
	if len(rounds) == 0 {
		return 0, false
	}
	best := rounds[0]
	for _, rr := range rounds[1:] {
		if rr.Accuracy > best.Accuracy {
			best = rr
		}
	}
	return best.Round, true
}

func attackLabel(c settings) string {
	if c.Attackers <= 0 {
		return "0"
	}
	return fmt.Sprintf("%g %s", c.Attackers, orDash(c.Attack))
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// HumanBytes formats n in decimal units: "950 B", "12.3 KB", "4.56 MB", "1.20 GB".
func HumanBytes(n int64) string {
	const unit = 1000
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KB", "MB", "GB", "TB"} {
		f /= unit
		if (f < unit && f > -unit) || u == "TB" {
			switch {
			case f >= 100 || f <= -100:
				return fmt.Sprintf("%.0f %s", f, u)
			case f >= 10 || f <= -10:
				return fmt.Sprintf("%.1f %s", f, u)
			default:
				return fmt.Sprintf("%.2f %s", f, u)
			}
		}
	}
	panic("unreachable")
}
