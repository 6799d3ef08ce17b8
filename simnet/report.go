package simnet

import "github.com/fedrank/fedrank/report"

// The report vocabulary lives in package report, which the daemon shares;
// these aliases keep simnet's API in its own terms. A simulated run's
// Report.Config holds its effective Config (report.ConfigAs[Config] reads it
// back from a decoded report.json).
type (
	// Report is the result of a simulated run: the report.json contract of
	// DESIGN.md section 4.
	Report = report.Report
	// ModelInfo names the model and identifies the final global model.
	ModelInfo = report.ModelInfo
	// RoundReport is one row of rounds.csv and one element of report.json's rounds.
	RoundReport = report.RoundReport
)

// roundMetrics is implemented by aggregators that report on each round.
type roundMetrics interface {
	RoundMetrics() map[string]float64
}
