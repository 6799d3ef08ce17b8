package task

import (
	"errors"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/model"
)

// smallConv is a convolutional network on smallData's 4x4 images: conv to 3
// channels 2x2, max-pool 2x2 (a remainder row and column dropped), two
// fully connected layers.
func smallConv() *model.ConvArch {
	return &model.ConvArch{Name: "small", H: 4, W: 4, C: 1, Ops: []model.Op{
		{Kind: model.OpConv, Out: 3, Size: 2},
		{Kind: model.OpPool, Size: 2},
		{Kind: model.OpFC, Out: 5},
		{Kind: model.OpFC, Out: 3},
	}}
}

// TestConvTasks: FRL and FedAvg on a convolutional network go the whole
// way through bytes: the initial model, a client's update that every
// aggregator takes, the poisoned updates of the attacks, the aggregated
// model, its evaluation; the model's header states the kernel's shape,
// and the export, which writes fully connected stacks, refuses it.
func TestConvTasks(t *testing.T) {
	d := smallData(t)
	fc := DefaultFRL(3)
	fc.Name, fc.Conv = "frl-conv", smallConv()
	frl, err := NewFRL(fc, d)
	if err != nil {
		t.Fatal(err)
	}
	dc := DefaultFedAvg(3)
	dc.Name, dc.Conv = "dense-conv", smallConv()
	dense, err := NewDense(dc, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range []interface {
		Task
		Attackable
	}{frl, dense} {
		info := tk.Info()
		if !strings.Contains(info.Model, "small [4x4x1 conv3k2 pool2 fc5 fc3]") || info.Params != 12+15+15 {
			t.Errorf("%s: %+v", info.Name, info)
		}
		var ups [][]byte
		for c := range 3 {
			p, err := tk.Train(jobOf(tk, c))
			if err != nil {
				t.Fatal(err)
			}
			again, _ := tk.Train(jobOf(tk, c))
			if string(again) != string(p) {
				t.Fatalf("%s: client %d trained twice gives two updates", info.Name, c)
			}
			ups = append(ups, p)
		}
		attack := AttackReverse
		if tk == Attackable(dense) {
			attack = AttackSignFlip
		}
		bad, err := tk.Poison(Poison{Attack: attack, Job: jobOf(tk, 0), Honest: ups[:1]})
		if err != nil {
			t.Fatalf("%s: %s: %v", info.Name, attack, err)
		}
		acceptedByAll(t, tk, append(ups, bad)...)
		a, _ := tk.NewAggregator("")
		global, _ := tk.InitialModel()
		_ = a.Begin(1, global)
		for _, p := range ups {
			if err := a.Add(aggregate.Update{Peer: "p", Samples: 10, Payload: p}); err != nil {
				t.Fatal(err)
			}
		}
		m, err := a.Finalize()
		if err != nil {
			t.Fatal(err)
		}
		ev, err := tk.Evaluate(m)
		if err != nil || ev.Samples != d.Test.N || !(ev.Loss > 0) {
			t.Fatalf("%s: evaluation %+v, %v", info.Name, ev, err)
		}
		if _, _, err := tk.(Exporter).DenseWeights(m); !errors.Is(err, errConvExport) {
			t.Errorf("%s: export of a conv model: %v", info.Name, err)
		}
	}
	// The model's header states each layer's shape.
	m, _ := frl.InitialModel()
	if _, err := frl.Spec().DecodeFRLModel(m, nil); err != nil {
		t.Fatal(err)
	}
	if sh := frl.Spec().Shapes; len(sh) != 3 || sh[0] != [2]int{4, 3} || sh[1] != [2]int{3, 5} {
		t.Fatalf("spec shapes %v", sh)
	}
}
