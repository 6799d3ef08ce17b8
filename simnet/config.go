package simnet

import "fmt"

// Config is every setting of a simulated run. Zero values mean "the scenario's
// default"; Run fills them in and reports the effective config in Report.Config.
type Config struct {
	Scenario   string  `json:"scenario"`
	Peers      int     `json:"peers"`
	PerRound   int     `json:"per_round"`
	Rounds     int     `json:"rounds"`
	Seed       uint64  `json:"seed"`
	Partition  string  `json:"partition"`  // "iid", "dirichlet:ALPHA", "shards:K"
	Aggregator string  `json:"aggregator"` // "" = the scenario's default
	Attackers  float64 `json:"attackers"`  // fraction of peers that attack, [0, 0.5)
	Attack     string  `json:"attack"`
	Net        string  `json:"net"`   // "ideal", "lan", "wan", "lossy"
	Crash      float64 `json:"crash"` // per-round probability that a selected trainer crashes
	// Quorum is the fraction of the selected peers whose updates close a round
	// early; the round otherwise closes at its deadline.
	Quorum float64 `json:"quorum"`
	// RoundTimeoutMs is the round deadline in simulated milliseconds.
	RoundTimeoutMs int64 `json:"round_timeout_ms"`
	// DataDir holds the MNIST IDX files; "" finds the copy shipped by the Go module.
	DataDir string `json:"data_dir"`
	// Rank is the adapter rank of low-rank (LoRA) scenarios; 0 = the scenario's.
	Rank int `json:"rank"`
	// Compression is the upload codec of low-rank scenarios: "fp32", "fp16"
	// or "int8" (with a scale per component); "" = the scenario's.
	Compression string `json:"compression"`
	// Workers is the number of goroutines that run local training and
	// evaluation (0 = GOMAXPROCS). It changes wall time, never results.
	Workers int `json:"workers"`
}

// ConfigError names the setting that is wrong. The CLI maps it to exit code 2.
type ConfigError struct {
	Field string // the flag / JSON name, e.g. "per_round"
	Msg   string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Msg) }
