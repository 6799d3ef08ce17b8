package genesis

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// fileText is a hand-written genesis: aggregator p[0], members p[1..5].
func fileText(p []string) string {
	return `# A pilot federation.
name = "pilot"
aggregator = "` + p[0] + `"
members = ["` + p[1] + `", "` + p[2] + `", "` + p[3] + `", "` + p[4] + `", "` + p[5] + `"]
scenario = "frl-mnist"
seed = 7
rounds = 30
per_round = 3
quorum = 2
round_timeout = "2m"
bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/` + p[0] + `"]

[task]
lr = 0.4
`
}

func mustParse(t *testing.T, text string) *Genesis {
	t.Helper()
	g, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return g
}

// TestRoundTrip: Encode writes what Parse reads back to an equal genesis
// (defaults filled in) of the same id, and Encode is stable.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	custom := sample(t)
	custom.Scenario, custom.AggregatorName = "fedavg-mnist", "trimmed-mean"
	custom.Name = "quote \" backslash \\ tab \t newline \n bell \a del \x7f ünïcødé ✓"
	custom.Task = TaskParams{LR: 0.05, Momentum: ptr(0.0), WeightDecay: ptr(0.0), Epochs: 1, Batch: 32, Cosine: ptr(false), LRDecay: 1}
	custom.Bootstrap = nil
	custom.Rounds, custom.Seed = 0, math.MaxInt64
	custom.RoundTimeout, custom.Retry, custom.SilenceTimeout = Duration(1500*time.Millisecond), Duration(time.Millisecond), Duration(90*time.Minute)
	custom.MaxUpdateBytes, custom.MaxModelBytes, custom.ChunkBytes = 1000, 3000, 3000
	lora := loraSample(t, dir)
	lora.AggregatorName, lora.Task.Rank, lora.Task.Compression = "lora-ffa", 8, "fp16"
	lora.Task.BaseModelHash = strings.ToUpper(lora.Task.BaseModelHash)
	loraFedAvg := loraSample(t, dir)
	loraFedAvg.AggregatorName = "fedavg"
	frlLoRA := frlLoRASample(t, dir)
	frlLoRA.AggregatorName, frlLoRA.Task.Rank, frlLoRA.Task.RankingCodec = "vote-median", 8, "bucket:32"

	for name, g := range map[string]*Genesis{
		"defaults": sample(t), "custom": custom, "lora": lora, "lora-fedavg": loraFedAvg,
		"frl-lora": frlLoRA, "frl-lora-defaults": frlLoRASample(t, dir),
		"parsed": mustParse(t, fileText(testPeers(t, 6, 2))),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := g.Encode()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if want := g.filled(); !reflect.DeepEqual(back, want) {
				t.Fatalf("read back\n%+v\nwant\n%+v", back, want)
			}
			if back.ID() != g.ID() {
				t.Fatal("the id changed")
			}
			again, err := back.Encode()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("Encode is not stable (%v):\n%s\n---\n%s", err, b, again)
			}
			if !bytes.Contains(b, []byte("# federation id: "+g.ID()+"\n")) {
				t.Fatal("the file does not name its id")
			}
		})
	}
}

// TestParseFillsDefaults: a minimal file gets every default.
func TestParseFillsDefaults(t *testing.T) {
	p := testPeers(t, 3, 3)
	g := mustParse(t, `name = "x"
aggregator = "`+p[0]+`"
members = ["`+p[1]+`", "`+p[2]+`"]
scenario = "lora-mnist"
per_round = 2
round_timeout = "1005ms"
task.base_model = "b.safetensors"
task.base_model_hash = "`+strings.Repeat("Ab", 32)+`"
`)
	want := Genesis{
		Name: "x", Aggregator: p[0], Members: p[1:], Scenario: "lora-mnist", AggregatorName: "lora-svd",
		PerRound: 2, Quorum: 2, MinUpdates: 1,
		RoundTimeout: Duration(1005 * time.Millisecond), Retry: Duration(100 * time.Millisecond), SilenceTimeout: Duration(2010 * time.Millisecond),
		MaxUpdateBytes: 8 << 20, MaxModelBytes: 64 << 20, ChunkBytes: 1 << 20,
		Task: TaskParams{LR: 0.004, Momentum: ptr(0.9), WeightDecay: ptr(1e-4), Epochs: 2, Batch: 8, Cosine: ptr(true), LRDecay: 0.99,
			Rank: 4, Compression: "int8", BaseModel: "b.safetensors", BaseModelHash: strings.Repeat("ab", 32)},
	}
	if !reflect.DeepEqual(*g, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", *g, want)
	}
	// lora-mnist's dense baseline trains with the dense defaults.
	g.AggregatorName = "fedavg"
	g.Task = TaskParams{BaseModel: "b", BaseModelHash: g.Task.BaseModelHash}
	if f := g.filled(); f.Task.LR != 0.003 {
		t.Fatalf("lora-mnist fedavg lr default %v, want task.DefaultLoRA's DenseHyper 0.003", f.Task.LR)
	}
}

// TestIDInvariance: comments, whitespace, key order, member order, bootstrap,
// the base model's path, hash case and writing a default out do not change
// the id.
func TestIDInvariance(t *testing.T) {
	p := testPeers(t, 7, 4)
	base := fileText(p)
	id := mustParse(t, base).ID()
	same := map[string]string{
		"comments and whitespace": "\n\n# header\n" + strings.NewReplacer(
			" = ", "   =\t", "\n", "   # trailing comment\n\n", `", "`, "\",\n    \"").Replace(base),
		"member order": strings.Replace(strings.Replace(base, p[1], "TMP", 1), p[5], p[1], 1),
		"bootstrap changed": strings.Replace(base, "/ip4/127.0.0.1/tcp/4001/p2p/"+p[0],
			"/dns4/agg.example.org/udp/4001/quic-v1/p2p/"+p[0]+`", "/ip6/::1/tcp/9/p2p/`+p[6], 1),
		"bootstrap removed":        strings.Replace(base, `bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/`+p[0]+`"]`, "", 1),
		"packed codec written out": strings.Replace(base, "[task]\n", "[task]\nranking_codec = \"packed\"\n", 1),
		"defaults written out": strings.Replace(base, "[task]\n", `aggregation = "vote-clamp"
min_updates = 1
retry = "12000ms"
silence_timeout = "4m"
max_update_bytes = 8388608
max_model_bytes = 67108864
chunk_bytes = 1048576
[task]
momentum = 0.9
weight_decay = 1e-4
epochs = 2
batch = 8
cosine = true
lr_decay = 0.999
`, 1),
		"default left out":       strings.Replace(base, "lr = 0.4\n", "", 1),
		"another duration form":  strings.Replace(base, `"2m"`, `"120s"`, 1),
		"dotted task keys":       strings.Replace(base, "\n[task]\nlr = 0.4\n", "\ntask.lr = 0.4\n", 1),
		"inline task table":      strings.Replace(base, "\n[task]\nlr = 0.4\n", "\ntask = { lr = 0.4 }\n", 1),
		"float written as 4e-1":  strings.Replace(base, "lr = 0.4", "lr = 4e-1", 1),
		"literal strings":        strings.ReplaceAll(strings.Replace(base, `name = "pilot"`, `name = 'pilot'`, 1), `"2m"`, `'2m'`),
		"members on their lines": strings.Replace(base, `", "`, "\",\n  \"", -1),
	}
	same["member order"] = strings.Replace(same["member order"], "TMP", p[5], 1)
	lines := strings.Split(strings.TrimSpace(strings.SplitN(base, "[task]", 2)[0]), "\n")
	for i, j := 0, len(lines)-1; i < j; i, j = i+1, j-1 {
		lines[i], lines[j] = lines[j], lines[i]
	}
	// A table's keys must follow its header: the top level reversed, then [task].
	same["key order"] = strings.Join(lines, "\n") + "\n[task]\nlr = 0.4\n"
	for name, text := range same {
		if text == base {
			t.Fatalf("%s: the variant is the base file", name)
		}
		if got := mustParse(t, text).ID(); got != id {
			t.Errorf("%s: id %s, want %s\n%s", name, got, id, text)
		}
	}

	dir := t.TempDir()
	lora := loraSample(t, dir)
	loraID := lora.ID()
	moved := *lora
	moved.Task.BaseModel = "elsewhere/base.safetensors"
	upper := *lora
	upper.Task.BaseModelHash = strings.ToUpper(lora.Task.BaseModelHash)
	if moved.ID() != loraID || upper.ID() != loraID {
		t.Error("the base model's path or the hash's case changed the id")
	}
}

// TestIDChanges: every other setting is part of the id; the table must name
// every TOML key but bootstrap and task.base_model.
func TestIDChanges(t *testing.T) {
	dir := t.TempDir()
	p := testPeers(t, 8, 5)
	changes := map[string]func(g *Genesis){
		"name":            func(g *Genesis) { g.Name += "2" },
		"aggregator":      func(g *Genesis) { g.Aggregator = p[7] },
		"members":         func(g *Genesis) { g.Members = append(g.Members[:len(g.Members):len(g.Members)], p[7]) },
		"scenario":        func(g *Genesis) { g.Scenario = "fedavg-mnist"; g.Task.LR = 0.4 },
		"aggregation":     func(g *Genesis) { g.AggregatorName = "vote" },
		"seed":            func(g *Genesis) { g.Seed++ },
		"rounds":          func(g *Genesis) { g.Rounds++ },
		"per_round":       func(g *Genesis) { g.PerRound++ },
		"quorum":          func(g *Genesis) { g.Quorum++ },
		"min_updates":     func(g *Genesis) { g.MinUpdates = 2 },
		"round_timeout":   func(g *Genesis) { g.RoundTimeout += Duration(time.Millisecond); g.Retry = Duration(12 * time.Second) },
		"retry":           func(g *Genesis) { g.Retry = Duration(11 * time.Second) },
		"silence_timeout": func(g *Genesis) { g.SilenceTimeout = Duration(time.Hour) },
		"max_update_bytes": func(g *Genesis) {
			g.MaxUpdateBytes = 1 << 20
		},
		"max_model_bytes":      func(g *Genesis) { g.MaxModelBytes = 32 << 20 },
		"chunk_bytes":          func(g *Genesis) { g.ChunkBytes = 4 << 20 },
		"task.lr":              func(g *Genesis) { g.Task.LR = 0.3 },
		"task.momentum":        func(g *Genesis) { g.Task.Momentum = ptr(0.0) },
		"task.weight_decay":    func(g *Genesis) { g.Task.WeightDecay = ptr(0.0) },
		"task.epochs":          func(g *Genesis) { g.Task.Epochs = 3 },
		"task.batch":           func(g *Genesis) { g.Task.Batch = 16 },
		"task.cosine":          func(g *Genesis) { g.Task.Cosine = ptr(false) },
		"task.lr_decay":        func(g *Genesis) { g.Task.LRDecay = 1 },
		"task.ranking_codec":   func(g *Genesis) { g.Task.RankingCodec = "delta" },
		"task.rank":            func(g *Genesis) { g.Task.Rank = 2 },
		"task.compression":     func(g *Genesis) { g.Task.Compression = "fp32" },
		"task.base_model_hash": func(g *Genesis) { g.Task.BaseModelHash = strings.Repeat("0", 64) },
	}
	for key := range knownKeys {
		if _, ok := changes[key]; !ok && key != "bootstrap" && key != "task" && key != "task.base_model" {
			t.Errorf("no id test changes %s", key)
		}
	}
	lora := map[string]bool{"task.rank": true, "task.compression": true, "task.base_model_hash": true}
	ids := map[string]string{}
	for key, change := range changes {
		g := sample(t)
		g.Members = append(g.Members, p[0], p[1]) // room for min_updates and per_round
		if lora[key] {
			g = loraSample(t, dir)
		}
		before := g.ID()
		change(g)
		if err := g.Validate(); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		after := g.ID()
		if after == before {
			t.Errorf("changing %s keeps the id", key)
		}
		if other, dup := ids[after]; dup {
			t.Errorf("changing %s and %s give the same id", key, other)
		}
		ids[after] = key
	}
}

// TestCanonicalEncoding pins the documented serialization: changing it
// changes every federation's id.
func TestCanonicalEncoding(t *testing.T) {
	g := &Genesis{
		Name: "pin <&> \"é\"", Aggregator: "12D3KooWQxoEx3jK2UgWFQ2sDvrsAGxeTUKHWvhgnLMXMkygPny5",
		Members:  []string{"12D3KooWNcgSqVzSp5XJj6zZtPwVhXx1WArHoAE2srtKSunTvPHL", "12D3KooWBUUWNSdCCBVg6UmrZddLJJ42ApMActeoKME5VbXuZYaj"},
		Scenario: "lora-mnist", Seed: 1 << 62, Rounds: 3, PerRound: 2,
		RoundTimeout: Duration(90 * time.Second), Bootstrap: []string{"ignored"},
		Task: TaskParams{LR: 1e-7, BaseModel: "ignored", BaseModelHash: strings.Repeat("AB", 32)},
	}
	want := "fedrank-genesis/v1\n" +
		`{"name":"pin <&> \"é\"","aggregator":"12D3KooWQxoEx3jK2UgWFQ2sDvrsAGxeTUKHWvhgnLMXMkygPny5",` +
		`"members":["12D3KooWBUUWNSdCCBVg6UmrZddLJJ42ApMActeoKME5VbXuZYaj","12D3KooWNcgSqVzSp5XJj6zZtPwVhXx1WArHoAE2srtKSunTvPHL"],` +
		`"scenario":"lora-mnist","aggregation":"lora-svd","seed":4611686018427387904,"rounds":3,"per_round":2,"quorum":2,"min_updates":1,` +
		`"round_timeout_ms":90000,"retry_ms":9000,"silence_timeout_ms":180000,"max_update_bytes":8388608,"max_model_bytes":67108864,"chunk_bytes":1048576,` +
		`"task":{"lr":1e-7,"momentum":0.9,"weight_decay":0.0001,"epochs":2,"batch":8,"cosine":true,"lr_decay":0.99,"rank":4,"compression":"int8",` +
		`"base_model_hash":"` + strings.Repeat("ab", 32) + `"}}`
	if got := string(g.Canonical()); got != want {
		t.Fatalf("canonical encoding\n%s\nwant\n%s", got, want)
	}
	sum := sha256.Sum256([]byte(want))
	if g.ID() != hex.EncodeToString(sum[:]) {
		t.Fatal("ID is not the SHA-256 of the canonical encoding")
	}
}

// TestValidateErrors: every check names its key.
func TestValidateErrors(t *testing.T) {
	dir := t.TempDir()
	p := testPeers(t, 8, 6)
	for _, tc := range []struct {
		name, field string
		lora        bool
		change      func(g *Genesis)
	}{
		{"no name", "name", false, func(g *Genesis) { g.Name = "" }},
		{"name not UTF-8", "name", false, func(g *Genesis) { g.Name = "\xff" }},
		{"no aggregator", "aggregator", false, func(g *Genesis) { g.Aggregator = "" }},
		{"aggregator not a peer ID", "aggregator", false, func(g *Genesis) { g.Aggregator = "aggregator" }},
		{"aggregator not canonical", "aggregator", false, func(g *Genesis) { g.Aggregator = cidForm(t, g.Aggregator) }},
		{"no members", "members", false, func(g *Genesis) { g.Members = nil }},
		{"empty member", "members", false, func(g *Genesis) { g.Members[2] = "" }},
		{"member not a peer ID", "members", false, func(g *Genesis) { g.Members[2] = "peer-0002" }},
		{"member not canonical", "members", false, func(g *Genesis) { g.Members[2] = cidForm(t, g.Members[2]) }},
		{"duplicate member", "members", false, func(g *Genesis) { g.Members[2] = g.Members[1] }},
		{"aggregator a member", "members", false, func(g *Genesis) { g.Members[2] = g.Aggregator }},
		{"no scenario", "scenario", false, func(g *Genesis) { g.Scenario = "" }},
		{"unknown scenario", "scenario", false, func(g *Genesis) { g.Scenario = "cifar" }},
		{"aggregation of another scenario", "aggregation", false, func(g *Genesis) { g.AggregatorName = "fedavg" }},
		{"unknown aggregation", "aggregation", false, func(g *Genesis) { g.AggregatorName = "mean" }},
		{"seed beyond TOML", "seed", false, func(g *Genesis) { g.Seed = math.MaxInt64 + 1 }},
		{"rounds beyond TOML", "rounds", false, func(g *Genesis) { g.Rounds = math.MaxUint64 }},
		{"per_round 0", "per_round", false, func(g *Genesis) { g.PerRound = 0 }},
		{"per_round > members", "per_round", false, func(g *Genesis) { g.PerRound = 6 }},
		{"quorum negative", "quorum", false, func(g *Genesis) { g.Quorum = -1 }},
		{"quorum > per_round", "quorum", false, func(g *Genesis) { g.Quorum = 4 }},
		{"min_updates negative", "min_updates", false, func(g *Genesis) { g.MinUpdates = -1 }},
		{"min_updates > quorum", "min_updates", false, func(g *Genesis) { g.MinUpdates = 3 }},
		{"no round_timeout", "round_timeout", false, func(g *Genesis) { g.RoundTimeout = 0 }},
		{"negative round_timeout", "round_timeout", false, func(g *Genesis) { g.RoundTimeout = -1 }},
		{"round_timeout below ms", "round_timeout", false, func(g *Genesis) { g.RoundTimeout = Duration(1500 * time.Microsecond) }},
		{"negative retry", "retry", false, func(g *Genesis) { g.Retry = Duration(-time.Second) }},
		{"retry below ms", "retry", false, func(g *Genesis) { g.Retry = Duration(time.Microsecond) }},
		{"negative silence_timeout", "silence_timeout", false, func(g *Genesis) { g.SilenceTimeout = Duration(-time.Second) }},
		{"silence_timeout below ms", "silence_timeout", false, func(g *Genesis) { g.SilenceTimeout = Duration(time.Second + 1) }},
		{"negative max_update_bytes", "max_update_bytes", false, func(g *Genesis) { g.MaxUpdateBytes = -1 }},
		{"huge max_update_bytes", "max_update_bytes", false, func(g *Genesis) { g.MaxUpdateBytes = 1 << 40 }},
		{"negative max_model_bytes", "max_model_bytes", false, func(g *Genesis) { g.MaxModelBytes = -1 }},
		{"negative chunk_bytes", "chunk_bytes", false, func(g *Genesis) { g.ChunkBytes = -1 }},
		{"chunk_bytes > max_model_bytes", "chunk_bytes", false, func(g *Genesis) { g.MaxModelBytes = 1000; g.ChunkBytes = 1001 }},
		{"bootstrap not a multiaddr", "bootstrap", false, func(g *Genesis) { g.Bootstrap = []string{"127.0.0.1:4001"} }},
		{"bootstrap without /p2p/", "bootstrap", false, func(g *Genesis) { g.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4001"} }},
		{"bootstrap without address", "bootstrap", false, func(g *Genesis) { g.Bootstrap = []string{"/p2p/" + p[0]} }},
		{"negative lr", "task.lr", false, func(g *Genesis) { g.Task.LR = -0.1 }},
		{"NaN lr", "task.lr", false, func(g *Genesis) { g.Task.LR = math.NaN() }},
		{"infinite lr", "task.lr", false, func(g *Genesis) { g.Task.LR = math.Inf(1) }},
		{"momentum 1", "task.momentum", false, func(g *Genesis) { g.Task.Momentum = ptr(1.0) }},
		{"negative momentum", "task.momentum", false, func(g *Genesis) { g.Task.Momentum = ptr(-0.5) }},
		{"negative weight_decay", "task.weight_decay", false, func(g *Genesis) { g.Task.WeightDecay = ptr(-1e-4) }},
		{"NaN weight_decay", "task.weight_decay", false, func(g *Genesis) { g.Task.WeightDecay = ptr(math.NaN()) }},
		{"negative epochs", "task.epochs", false, func(g *Genesis) { g.Task.Epochs = -1 }},
		{"negative batch", "task.batch", false, func(g *Genesis) { g.Task.Batch = -8 }},
		{"lr_decay > 1", "task.lr_decay", false, func(g *Genesis) { g.Task.LRDecay = 1.5 }},
		{"negative lr_decay", "task.lr_decay", false, func(g *Genesis) { g.Task.LRDecay = -0.9 }},
		{"unknown ranking_codec", "task.ranking_codec", false, func(g *Genesis) { g.Task.RankingCodec = "zip" }},
		{"ranking_codec outside frl", "task.ranking_codec", true, func(g *Genesis) { g.Task.RankingCodec = "delta" }},
		{"rank outside lora", "task.rank", false, func(g *Genesis) { g.Task.Rank = 4 }},
		{"compression outside lora", "task.compression", false, func(g *Genesis) { g.Task.Compression = "int8" }},
		{"base_model outside lora", "task.base_model", false, func(g *Genesis) { g.Task.BaseModel = "b.safetensors" }},
		{"base_model_hash outside lora", "task.base_model_hash", false, func(g *Genesis) { g.Task.BaseModelHash = strings.Repeat("0", 64) }},
		{"negative rank", "task.rank", true, func(g *Genesis) { g.Task.Rank = -1 }},
		{"huge rank", "task.rank", true, func(g *Genesis) { g.Task.Rank = 5000 }},
		{"unknown compression", "task.compression", true, func(g *Genesis) { g.Task.Compression = "bf16" }},
		{"no base_model", "task.base_model", true, func(g *Genesis) { g.Task.BaseModel = "" }},
		{"no base_model_hash", "task.base_model_hash", true, func(g *Genesis) { g.Task.BaseModelHash = "" }},
		{"short base_model_hash", "task.base_model_hash", true, func(g *Genesis) { g.Task.BaseModelHash = "abcd" }},
		{"base_model_hash not hex", "task.base_model_hash", true, func(g *Genesis) { g.Task.BaseModelHash = strings.Repeat("g", 64) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := sample(t)
			if tc.lora {
				g = loraSample(t, dir)
			}
			if err := g.Validate(); err != nil {
				t.Fatalf("the sample is invalid: %v", err)
			}
			tc.change(g)
			err := g.Validate()
			var ge *Error
			if !errors.As(err, &ge) || ge.Field != tc.field {
				t.Fatalf("error %v, want one about %s", err, tc.field)
			}
			if !strings.HasPrefix(err.Error(), "genesis: "+tc.field+": ") {
				t.Fatalf("error %q does not start with the key", err)
			}
			if _, err := g.Encode(); err == nil {
				t.Fatal("Encode wrote an invalid genesis")
			}
			if _, err := g.NodeConfig(g.Aggregator); err == nil {
				t.Fatal("NodeConfig of an invalid genesis")
			}
		})
	}
}

// cidForm writes a peer ID as a CIDv1 (base32), a form peer.Decode accepts
// but the node machine would not match against the base58 form.
func cidForm(t *testing.T, id string) string {
	t.Helper()
	pid, err := peer.Decode(id)
	if err != nil {
		t.Fatal(err)
	}
	return peer.ToCid(pid).String()
}

// TestParseStrict: unknown keys, keys in the wrong case, wrong types,
// negative integers and bad durations are errors that name the key.
func TestParseStrict(t *testing.T) {
	p := testPeers(t, 6, 7)
	base := fileText(p)
	for _, tc := range []struct{ name, text, want string }{
		{"unknown key", base + "\n[extra]\nx = 1\n", `"extra`},
		{"unknown top-level key", "per_rounds = 3\n" + base, `"per_rounds"`},
		{"unknown task key", base + "learning_rate = 0.1\n", `"task.learning_rate"`},
		// The simulator's --model lenet is not a federation setting: a
		// genesis always runs the fully connected network.
		{"model choice", base + "model = \"lenet\"\n", `"task.model"`},
		{"wrong case", strings.Replace(base, "name =", "Name =", 1), `"Name"`},
		{"quoted dotted key", strings.Replace(base, "seed = 7", `"seed.x" = 7`, 1), `seed.x`},
		{"unknown key in inline table", strings.Replace(base, "\n[task]\nlr = 0.4\n", "\ntask = { lr = 0.4, x = 1 }\n", 1), `"task.x"`},
		{"negative seed", strings.Replace(base, "seed = 7", "seed = -1", 1), "seed"},
		{"negative rounds", strings.Replace(base, "rounds = 30", "rounds = -30", 1), "rounds"},
		{"duration without unit", strings.Replace(base, `"2m"`, `"120"`, 1), "round_timeout"},
		{"duration as integer", strings.Replace(base, `"2m"`, `120`, 1), "round_timeout"},
		{"string for integer", strings.Replace(base, "per_round = 3", `per_round = "3"`, 1), "per_round"},
		{"member not a string", strings.Replace(base, `"`+p[5]+`"`, "5", 1), "members"},
		{"task not a table", strings.Replace(base, "\n[task]\nlr = 0.4\n", "\ntask = 1\n", 1), "task"},
		{"invalid setting", strings.Replace(base, "quorum = 2", "quorum = 9", 1), "genesis: quorum: "},
		{"not TOML", "name = ", "genesis: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	if _, err := Parse(append([]byte(base), bytes.Repeat([]byte("#"), MaxFileBytes)...)); err == nil {
		t.Fatal("an oversized file parsed")
	}
}

// TestLoad: Load returns the raw file and resolves base_model against the
// file's directory.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	g := loraSample(t, dir)
	g.Task.BaseModel = filepath.Base(g.Task.BaseModel)
	b, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "genesis.toml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, raw, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, b) || got.ID() != g.ID() {
		t.Fatal("Load differs from the file")
	}
	if got.BaseModelPath() != filepath.Join(dir, "base.safetensors") {
		t.Fatalf("base model at %s", got.BaseModelPath())
	}
	if _, err := got.LoadBase(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.LoadBase(); err == nil { // relative to the working directory
		t.Fatal("a genesis from code found the base relative to a file it was not read from")
	}
	if _, _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Fatal("a missing file loaded")
	}
	if err := os.WriteFile(path, []byte("bogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a bad file: %v, want the path named", err)
	}
}

// TestDuration: TOML durations decode from Go duration strings and encode
// back.
func TestDuration(t *testing.T) {
	for s, want := range map[string]string{"2m": "2m", "120s": "2m", "1h0m0s": "1h", "90m": "1h30m", "1m30s": "1m30s", "500ms": "500ms", "0s": "0s", "36h": "36h"} {
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		b, _ := d.MarshalText()
		if string(b) != want {
			t.Errorf("%s encodes as %s, want %s", s, b, want)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("%s does not read back: %v", b, err)
		}
	}
	var d Duration
	if err := d.UnmarshalText([]byte("2 minutes")); err == nil {
		t.Fatal("a bad duration parsed")
	}
}

// A genesis file written by `node genesis` before frl-mnist's default
// ranking codec became bucket-mask:16 (testdata/packed-before-codecs.toml,
// without task.ranking_codec) keeps its federation id, the one that
// version printed, and its packed rankings; the same file encoded again
// says "packed" and keeps the id too.
func TestPackedGenesisBeforeCodecsKeepsItsID(t *testing.T) {
	const id = "72c670f084a1532eebc0a054e764881464da07f955aa58a995512895a0a4c4da"
	g, _, err := Load("testdata/packed-before-codecs.toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.ID(); got != id {
		t.Fatalf("id %s, want %s", got, id)
	}
	if g.Task.RankingCodec != "packed" {
		t.Fatalf("ranking codec %q, want packed", g.Task.RankingCodec)
	}
	b, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `ranking_codec = "packed"`) {
		t.Fatal("the encoding does not say packed")
	}
	again, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != id {
		t.Fatalf("re-encoded: id %s, want %s", again.ID(), id)
	}
}
