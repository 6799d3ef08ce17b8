package sweep

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/fedrank/fedrank/report"
)

// Stat summarises one metric over the seeds of a group.
type Stat struct {
	N    int
	Mean float64
	// SD is the sample standard deviation (n-1 in the denominator); NaN
	// for fewer than two values.
	SD float64
	// Lo and Hi bound the Student-t 95% confidence interval of the mean,
	// Mean ± t(0.975, n-1) × SD / sqrt(n); NaN for fewer than two values.
	Lo, Hi float64
}

// HalfWidth is half the 95% interval (NaN without one).
func (s Stat) HalfWidth() float64 { return (s.Hi - s.Lo) / 2 }

// Describe computes the Stat of xs, leaving out NaN values.
func Describe(xs []float64) Stat {
	var vals []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			vals = append(vals, x)
		}
	}
	s := Stat{N: len(vals), Mean: math.NaN(), SD: math.NaN(), Lo: math.NaN(), Hi: math.NaN()}
	if s.N == 0 {
		return s
	}
	sum := 0.0
	for _, x := range vals {
		sum += x
	}
	s.Mean = sum / float64(s.N)
	if s.N < 2 {
		return s
	}
	ss := 0.0
	for _, x := range vals {
		ss += (x - s.Mean) * (x - s.Mean)
	}
	s.SD = math.Sqrt(ss / float64(s.N-1))
	hw := TQuantile975(s.N-1) * s.SD / math.Sqrt(float64(s.N))
	s.Lo, s.Hi = s.Mean-hw, s.Mean+hw
	return s
}

// TQuantile975 is the 0.975 quantile of Student's t distribution with df
// degrees of freedom: 12.706 for 1, 4.303 for 2, 1.960 as df grows.
func TQuantile975(df int) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(df)}.Quantile(0.975)
}

// Metric is a number a run yields, summarised over the seeds of a group.
type Metric struct {
	Name  string // column name
	Title string // Markdown column header
	// Format prints a value in Markdown; Scale multiplies it first.
	Format string
	Scale  float64
	Of     func(*report.Report) float64
}

// Metrics are the per-run metrics of summary.csv and runs.csv.
var Metrics = []Metric{
	{"final_accuracy", "final accuracy", "%.4f", 1, func(r *report.Report) float64 { return r.FinalAccuracy }},
	{"best_accuracy", "best accuracy", "%.4f", 1, func(r *report.Report) float64 { return r.BestAccuracy }},
	{"last_third_accuracy", "accuracy, last third", "%.4f", 1, LastThirdAccuracy},
	{"bytes_up_per_update", "KB up per update", "%.1f", 1e-3, func(r *report.Report) float64 { return r.BytesUpPerUpdate }},
	{"wall_seconds", "wall s", "%.1f", 1, func(r *report.Report) float64 { return r.WallSeconds }},
}

// LastThirdAccuracy is the mean accuracy over the last third of r's rounds
// (the last ceil(n/3)): a steadier figure than the final round's.
func LastThirdAccuracy(r *report.Report) float64 {
	n := len(r.Rounds)
	if n == 0 {
		return math.NaN()
	}
	k := (n + 2) / 3
	sum := 0.0
	for _, rr := range r.Rounds[n-k:] {
		sum += rr.Accuracy
	}
	return sum / float64(k)
}

// roundMetric is a per-round metric (RoundMetrics) of a round.
func roundMetric(name string, rr report.RoundReport) float64 {
	switch name {
	case "accuracy":
		return rr.Accuracy
	case "loss":
		return rr.Loss
	case "bytes_up":
		return float64(rr.BytesUp)
	case "bytes_down":
		return float64(rr.BytesDown)
	case "accepted":
		return float64(rr.Accepted)
	case "sim_ms":
		return rr.SimMs
	}
	return math.NaN()
}
