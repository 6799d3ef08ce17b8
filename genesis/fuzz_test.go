package genesis

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParse: no input panics Parse, and whatever Parse accepts is valid and
// survives Encode and Parse again unchanged, with the same id.
func FuzzParse(f *testing.F) {
	p := testPeers(f, 6, 8)
	text := fileText(p)
	f.Add([]byte(text))
	f.Add([]byte(strings.Replace(text, "frl-mnist", "fedavg-mnist", 1)))
	f.Add([]byte(strings.Replace(text, "lr = 0.4", "lr = 1e-300\nmomentum = 0.0\ncosine = false", 1)))
	f.Add([]byte(strings.Replace(text, `name = "pilot"`, `name = "\u0000\"\\é\U0001F600"`, 1)))
	f.Add([]byte(strings.Replace(text, "frl-mnist", "lora-mnist", 1) + "rank = 3\ncompression = \"fp16\"\nbase_model = \"b\"\nbase_model_hash = \"" + strings.Repeat("a", 64) + "\"\n"))
	f.Add([]byte(strings.Replace(text, "frl-mnist", "frl-lora-mnist", 1) + "rank = 8\nranking_codec = \"delta\"\nbase_model = \"b\"\nbase_model_hash = \"" + strings.Repeat("B", 64) + "\"\n"))
	g := sample(f)
	if b, err := g.Encode(); err == nil {
		f.Add(b)
	}
	fl := frlLoRASample(f, f.TempDir())
	if b, err := fl.Encode(); err == nil {
		f.Add(b)
	}
	f.Add([]byte("name = \n"))
	f.Add([]byte("[task]\n[task]\n"))
	f.Add([]byte("a.b.c = [[1], {x = 1}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Parse(b)
		if err != nil {
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid genesis: %v", err)
		}
		enc, err := g.Encode()
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		back, err := Parse(enc)
		if err != nil {
			t.Fatalf("the encoding does not parse: %v\n%s", err, enc)
		}
		if back.ID() != g.ID() || !reflect.DeepEqual(back, g) {
			t.Fatalf("the encoding reads back differently:\n%+v\n%+v\n%s", g, back, enc)
		}
	})
}
