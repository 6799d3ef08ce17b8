package aggregate

import (
	"fmt"
)

// FedAvg averages dense models weighted by their sample counts (McMahan et
// al.). Streaming: one float64 accumulator per weight.
type FedAvg struct {
	spec   Spec
	sum    [][]float64
	weight float64
	n      int
	buf    [][]float32
}

// NewFedAvg returns a FedAvg aggregator for networks of spec.
func NewFedAvg(spec Spec) (*FedAvg, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.clone()
	f := &FedAvg{spec: spec}
	for _, n := range spec.Layers() {
		f.sum = append(f.sum, make([]float64, n))
	}
	return f, nil
}

// Name implements Aggregator.
func (f *FedAvg) Name() string { return "fedavg" }

// Begin implements Aggregator.
func (f *FedAvg) Begin(round uint64, global []byte) error {
	if _, err := f.spec.checkHeader(global, magicDenseModel, "dense model"); err != nil {
		return err
	}
	for _, s := range f.sum {
		clear(s)
	}
	f.weight, f.n = 0, 0
	return nil
}

// Add implements Aggregator.
func (f *FedAvg) Add(u Update) error {
	if u.Samples <= 0 {
		return fmt.Errorf("update from %s: sample count %d must be > 0", u.Peer, u.Samples)
	}
	w, err := f.spec.DecodeDenseUpdate(u.Payload, f.buf)
	if err != nil {
		return fmt.Errorf("update from %s: %w", u.Peer, err)
	}
	f.buf = w
	p := float64(u.Samples)
	for l, layer := range w {
		s := f.sum[l][:len(layer)]
		for i, v := range layer {
			s[i] += p * float64(v)
		}
	}
	f.weight += p
	f.n++
	return nil
}

// Len implements Aggregator.
func (f *FedAvg) Len() int { return f.n }

// Finalize implements Aggregator.
func (f *FedAvg) Finalize() ([]byte, error) {
	if f.n == 0 {
		return nil, ErrNoUpdates
	}
	out := make([][]float32, len(f.sum))
	inv := 1 / f.weight
	for l, s := range f.sum {
		out[l] = make([]float32, len(s))
		for i, v := range s {
			out[l][i] = float32(v * inv)
		}
	}
	return f.spec.EncodeDenseModel(out), nil
}
