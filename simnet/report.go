package simnet

// Report is the result of a simulated run: the report.json contract of
// DESIGN.md section 4. Field names are relied on by scripts; add, never rename.
type Report struct {
	Scenario string        `json:"scenario"`
	Seed     uint64        `json:"seed"`
	Config   Config        `json:"config"`
	Model    ModelInfo     `json:"model"`
	Rounds   []RoundReport `json:"rounds"`
	// InitialAccuracy and InitialLoss score the model the run starts from
	// (round 0): a random supermask for FRL, the base model for fine-tuning.
	InitialAccuracy float64 `json:"initial_accuracy"`
	InitialLoss     float64 `json:"initial_loss"`
	FinalAccuracy   float64 `json:"final_accuracy"`
	BestAccuracy    float64 `json:"best_accuracy"`
	BytesUpTotal    int64   `json:"bytes_up_total"`
	BytesDownTotal  int64   `json:"bytes_down_total"`
	// BytesUpPerUpdate is the upload per peer and round: bytes_up_total over
	// the accepted updates (resends and rejected uploads included in the bytes).
	BytesUpPerUpdate float64 `json:"bytes_up_per_update"`
	WallSeconds      float64 `json:"wall_seconds"`
}

// ModelInfo names the model and identifies the final global model.
type ModelInfo struct {
	Name   string `json:"name"`
	Params int    `json:"params"`
	// Hash is the hex SHA-256 of the final global model's encoded bytes.
	Hash string `json:"hash"`
}

// RoundReport is one row of rounds.csv and one element of report.json's rounds.
type RoundReport struct {
	Round     uint64  `json:"round"`
	Accuracy  float64 `json:"accuracy"`
	Loss      float64 `json:"loss"`
	Selected  int     `json:"selected"`
	Accepted  int     `json:"accepted"`
	Rejected  int     `json:"rejected"`
	BytesUp   int64   `json:"bytes_up"`
	BytesDown int64   `json:"bytes_down"`
	SimMs     float64 `json:"sim_ms"`
	WallMs    float64 `json:"wall_ms"`
	ModelHash string  `json:"model_hash"`
	// Metrics holds what an aggregator reports about its round, e.g. the
	// fraction of energy lora-svd's truncation dropped ("svd_dropped", and
	// per layer "svd_dropped_l0", ...).
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// roundMetrics is implemented by aggregators that report on each round.
type roundMetrics interface {
	RoundMetrics() map[string]float64
}
