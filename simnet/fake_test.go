package simnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/task"
)

// fakeTask is a cheap, deterministic task: a model is a little-endian int64,
// a payload is too (derived from the job), and the aggregate adds the payloads
// to the model.
type fakeTask struct {
	clients   int
	modelSize int           // pad models to this many bytes (0 = 8)
	garbage   map[int]bool  // clients whose training returns an invalid payload
	fail      map[int]bool  // clients whose training fails
	delay     time.Duration // real time per Train
	trains    atomic.Int64
}

func (f *fakeTask) Info() task.Info {
	return task.Info{Name: "fake", Model: "int64 counter", Params: 1, DefaultAggregator: "sum", Aggregators: []string{"sum"}}
}
func (f *fakeTask) NumClients() int         { return f.clients }
func (f *fakeTask) ClientSamples(c int) int { return 10 + c%7 }
func (f *fakeTask) InitialModel() ([]byte, error) {
	return f.encodeModel(0), nil
}

func (f *fakeTask) encodeModel(v int64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(v))
	if f.modelSize > 8 {
		b = append(b, make([]byte, f.modelSize-8)...)
	}
	return b
}

func decodeInt(b []byte, min int) (int64, error) {
	if len(b) < 8 || len(b) < min {
		return 0, fmt.Errorf("fake: %d bytes", len(b))
	}
	return int64(binary.LittleEndian.Uint64(b)), nil
}

func (f *fakeTask) NewAggregator(name string) (aggregate.Aggregator, error) {
	if name != "" && name != "sum" {
		return nil, fmt.Errorf("fake: no aggregator %q", name)
	}
	return &fakeAgg{f: f}, nil
}

func (f *fakeTask) Train(job task.Job) ([]byte, error) {
	f.trains.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.fail[job.Client] {
		return nil, errors.New("fake: training failed")
	}
	if f.garbage[job.Client] {
		return []byte("garbage"), nil
	}
	if _, err := decodeInt(job.Model, 8); err != nil {
		return nil, err
	}
	// Depends on every input: the client, the round, the model and the seed.
	v := int64(job.Seed%1000) + int64(job.Client) + int64(job.Round)*7 + int64(job.Model[0])
	return binary.LittleEndian.AppendUint64(nil, uint64(v)), nil
}

func (f *fakeTask) Evaluate(model []byte) (task.Eval, error) {
	v, err := decodeInt(model, 8)
	if err != nil {
		return task.Eval{}, err
	}
	return task.Eval{Accuracy: float64(v%1000) / 1000, Loss: float64(v%97) / 10, Samples: 100}, nil
}

type fakeAgg struct {
	f         *fakeTask
	base, sum int64
	n         int
}

func (a *fakeAgg) Name() string { return "sum" }
func (a *fakeAgg) Begin(_ uint64, global []byte) error {
	v, err := decodeInt(global, 8)
	a.base, a.sum, a.n = v, 0, 0
	return err
}
func (a *fakeAgg) Add(u aggregate.Update) error {
	if len(u.Payload) != 8 {
		return fmt.Errorf("fake: payload of %d bytes, want 8", len(u.Payload))
	}
	v, _ := decodeInt(u.Payload, 8)
	a.sum += v
	a.n++
	return nil
}
func (a *fakeAgg) Len() int { return a.n }
func (a *fakeAgg) Finalize() ([]byte, error) {
	if a.n == 0 {
		return nil, aggregate.ErrNoUpdates
	}
	return a.f.encodeModel(a.base + a.sum), nil
}
