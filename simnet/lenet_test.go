package simnet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/data"
)

// smallMNISTDir writes the first train and test images of MNIST into a
// temporary directory (uncompressed IDX files), so that a LeNet run of the
// real scenarios, whose every round scores the whole test set, stays short.
func smallMNISTDir(t *testing.T, train, test int) string {
	t.Helper()
	src, err := data.MNISTDir("")
	if err != nil {
		t.Fatal(err)
	}
	tr, te, err := data.LoadMNIST(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []struct {
		name string
		set  *data.Set
		n    int
	}{
		{"train", tr, train}, {"t10k", te, test},
	} {
		write := func(name string, enc func(*os.File) error) {
			fh, err := os.Create(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := enc(fh); err != nil {
				t.Fatal(err)
			}
			if err := fh.Close(); err != nil {
				t.Fatal(err)
			}
		}
		s, n := f.set, f.n
		write(f.name+"-images-idx3-ubyte", func(fh *os.File) error {
			return data.EncodeIDXImages(fh, s.Rows, s.Cols, s.Pixels[:n*s.Dim()])
		})
		write(f.name+"-labels-idx1-ubyte", func(fh *os.File) error { return data.EncodeIDXLabels(fh, s.Labels[:n]) })
	}
	return dir
}

// TestLeNetSimReplays: one round of frl-mnist and fedavg-mnist with
// --model lenet on a slice of MNIST (400 training images over 20 peers, 3
// per round, 100 test images) runs, learns something, reports the LeNet
// model, and replays bit for bit (FRL run twice; both against pinned
// hashes); the default model is the fully connected one, reported as
// unset.
func TestLeNetSimReplays(t *testing.T) {
	skipUnderRace(t)
	dir := smallMNISTDir(t, 400, 100)
	// The models of this commit's LeNet: a change of the forward or backward
	// pass, the initialisation or the layer order shows here.
	golden := map[string]string{
		"frl-mnist":    "c497ed541dd24fb47ec43783ecb025f86a4034f0ab17e4bc2b72b1e83c86fe41",
		"fedavg-mnist": "986e9b54e3b105a7b91773b54b67ac56e55cc0705415ed4e47f54a6399f6be5d",
	}
	for _, sc := range []string{"frl-mnist", "fedavg-mnist"} {
		t.Run(sc, func(t *testing.T) {
			cfg := Config{Scenario: sc, Model: "lenet", Peers: 20, PerRound: 3, Rounds: 1, Seed: 3, DataDir: dir}
			a := runMNIST(t, cfg)
			b := a
			if sc == "frl-mnist" { // fedavg-mnist's replay is its pinned hash
				b = runMNIST(t, cfg)
			}
			if a.Model.Hash != b.Model.Hash || a.Rounds[0].Accuracy != b.Rounds[0].Accuracy || a.Rounds[0].Loss != b.Rounds[0].Loss {
				t.Fatalf("replay differs: %s %v %v vs %s %v %v", a.Model.Hash, a.Rounds[0].Accuracy, a.Rounds[0].Loss,
					b.Model.Hash, b.Rounds[0].Accuracy, b.Rounds[0].Loss)
			}
			t.Logf("%s: initial accuracy %.4f, round 1 %.4f, model %s", sc, a.InitialAccuracy, a.Rounds[0].Accuracy, a.Model.Hash)
			if a.Model.Hash != golden[sc] {
				t.Errorf("model %s, want %s", a.Model.Hash, golden[sc])
			}
			if !strings.Contains(a.Model.Name, "lenet") || a.Model.Params != 1199648 {
				t.Errorf("model %q with %d parameters", a.Model.Name, a.Model.Params)
			}
			if a.Rounds[0].Accuracy <= a.InitialAccuracy {
				t.Errorf("a round did not improve on the initial model: %.3f -> %.3f", a.InitialAccuracy, a.Rounds[0].Accuracy)
			}
			// --model fc is the default: the same effective config, so the
			// same run, as without the flag.
			fc := cfg
			fc.Model = "fc"
			eff, _, err := Resolve(fc)
			if err != nil {
				t.Fatal(err)
			}
			if eff.Model != "" {
				t.Errorf("the default model is reported as %q, want unset", eff.Model)
			}
		})
	}
	for _, bad := range []Config{
		{Scenario: "frl-mnist", Model: "resnet"},
		{Scenario: "lora-mnist", Model: "lenet"},
	} {
		if _, _, err := Resolve(bad); err == nil {
			t.Errorf("%s --model %s: no error", bad.Scenario, bad.Model)
		} else if ce, ok := err.(*ConfigError); !ok || ce.Field != "model" {
			t.Errorf("%s --model %s: %v, want a ConfigError on model", bad.Scenario, bad.Model, err)
		}
	}
}
