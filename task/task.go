// Package task ties a learning problem together for the drivers: the model, the
// clients' data, local training, the aggregators that fit the update format, and
// evaluation. The simulator and the daemon see a Task only through encoded bytes
// (models and update payloads), the same bytes that travel on the wire.
package task

import "github.com/fedrank/fedrank/aggregate"

// Info describes a task.
type Info struct {
	Name              string   // "frl-mnist"
	Model             string   // "lenet-300-100 supermask"
	Params            int      // trainable parameters (edges with scores, or weights)
	DefaultAggregator string   // used when the user names none
	Aggregators       []string // every aggregator name NewAggregator accepts
}

// Job is one local training run of one client.
type Job struct {
	Client int    // index of the client's data partition
	Round  uint64 // round number, from 1
	Model  []byte // the encoded global model the client starts from
	Seed   uint64 // seeds every random choice of the run (batch order)
}

// Eval is the global model's score on the task's test set.
type Eval struct {
	Accuracy float64
	Loss     float64
	Samples  int
}

// Task is a federated learning problem. Train and Evaluate are safe for
// concurrent use and deterministic: the same inputs give the same bytes.
type Task interface {
	Info() Info
	// NumClients is the number of data partitions (one per simulated peer).
	NumClients() int
	// ClientSamples is the number of training examples of client c.
	ClientSamples(c int) int
	// InitialModel is the encoded global model of round 1.
	InitialModel() ([]byte, error)
	// NewAggregator returns a fresh aggregator by name ("" = the default).
	NewAggregator(name string) (aggregate.Aggregator, error)
	// Train runs local training and returns the encoded update payload.
	Train(job Job) ([]byte, error)
	// Evaluate scores an encoded global model on the test set.
	Evaluate(model []byte) (Eval, error)
}
