package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/p2p"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/task"
)

// peerIDs returns n fresh libp2p peer IDs.
func peerIDs(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = p2p.PeerID(k)
	}
	return ids
}

// genesisArgs is a valid `node genesis` command line for an aggregator and
// members, writing out, followed by extra flags.
func genesisArgs(out, agg string, members []string, extra ...string) []string {
	return append([]string{"genesis", "--out", out, "--aggregator", agg, "--members", strings.Join(members, ",")}, extra...)
}

func TestGenesisFlagErrors(t *testing.T) {
	ids := peerIDs(t, 4)
	agg, members := ids[0], ids[1:]
	dir := t.TempDir()
	out := filepath.Join(dir, "genesis.toml")
	ms := strings.Join(members, ",")
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"genesis", "--aggregator", agg, "--members", ms}, "missing --out"},
		{[]string{"genesis", "--out", out, "--members", ms}, "missing --aggregator"},
		{[]string{"genesis", "--out", out, "--aggregator", agg}, "missing --members"},
		{[]string{"genesis", "--out", out, "--aggregator", agg, "--members", ms, "extra"}, `unexpected argument "extra"`},
		{genesisArgs(out, agg, members, "--bogus", "1"), "-bogus"},
		{genesisArgs(out, "nope", members), "invalid --aggregator"},
		{genesisArgs(out, agg, []string{members[0], members[0]}), "invalid --members"},
		{genesisArgs(out, agg, []string{agg, members[0]}), "invalid --members"},
		{genesisArgs(out, agg, members, "--scenario", "bogus"), "invalid --scenario"},
		{genesisArgs(out, agg, members, "--aggregation", "fedavg"), "invalid --aggregation"},
		{genesisArgs(out, agg, members, "--per-round", "4"), "invalid --per-round"},
		{genesisArgs(out, agg, members, "--per-round", "2", "--quorum", "3"), "invalid --quorum"},
		{genesisArgs(out, agg, members, "--quorum", "2", "--min-updates", "3"), "invalid --min-updates"},
		{genesisArgs(out, agg, members, "--round-timeout", "1500us"), "invalid --round-timeout"},
		{genesisArgs(out, agg, members, "--round-timeout", "soon"), "-round-timeout"},
		{genesisArgs(out, agg, members, "--retry", "-1s"), "invalid --retry"},
		{genesisArgs(out, agg, members, "--silence-timeout", "-1s"), "invalid --silence-timeout"},
		{genesisArgs(out, agg, members, "--max-update-bytes", "-5"), "invalid --max-update-bytes"},
		{genesisArgs(out, agg, members, "--max-model-bytes", "-5"), "invalid --max-model-bytes"},
		{genesisArgs(out, agg, members, "--chunk-bytes", "100000000"), "invalid --chunk-bytes"},
		{genesisArgs(out, agg, members, "--bootstrap", "/ip4/1.2.3.4/tcp/1"), "invalid --bootstrap"},
		{genesisArgs(out, agg, members, "--lr", "-1"), "invalid --lr"},
		{genesisArgs(out, agg, members, "--epochs", "-1"), "invalid --epochs"},
		{genesisArgs(out, agg, members, "--batch", "-1"), "invalid --batch"},
		{genesisArgs(out, agg, members, "--rank", "4"), "invalid --rank"},
		{genesisArgs(out, agg, members, "--compression", "int8"), "invalid --compression"},
		{genesisArgs(out, agg, members, "--scenario", "lora-mnist", "--compression", "int4"), "invalid --compression"},
		{genesisArgs(out, agg, members, "--scenario", "lora-mnist", "--rank", "5000"), "invalid --rank"},
		{genesisArgs(out, agg, members, "--data", dir), "invalid --data"},
		{genesisArgs(out, agg, members, "--scenario", "fedavg-mnist", "--data", dir), "only frl-lora-mnist and lora-mnist read training data"},
		{genesisArgs(out, agg, members, "--scenario", "frl-lora-mnist", "--compression", "int8"), "invalid --compression: only lora-mnist uploads adapter factors, not frl-lora-mnist"},
		{genesisArgs(out, agg, members, "--scenario", "frl-lora-mnist", "--rank", "5000"), "invalid --rank"},
		{genesisArgs(out, agg, members, "--scenario", "frl-lora-mnist", "--aggregation", "lora-svd"), "invalid --aggregation"},
		{genesisArgs(out, agg, members, "--scenario", "frl-lora-mnist", "--ranking-codec", "bucket:1"), "invalid --ranking-codec"},
		{genesisArgs(out, agg, members, "--scenario", "lora-mnist", "--ranking-codec", "delta"), "invalid --ranking-codec"},
		{genesisArgs(out, agg, members, "--name", ""), "invalid --name"},
		{genesisArgs(dir, agg, members), "invalid --out"},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("node %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args[1:], code, stdout, stderr, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed node genesis wrote %s", out)
	}
	if code, _, stderr := runCLI("genesis", "-h"); code != exitOK || !strings.Contains(stderr, "--per-round") {
		t.Errorf("node genesis -h: exit %d, stderr %q", code, stderr)
	}
}

// TestGenesisFieldsHaveFlags checks that each flag flagForGenesisField names
// exists.
func TestGenesisFieldsHaveFlags(t *testing.T) {
	var buf bytes.Buffer
	runGenesis("node genesis", []string{"-h"}, &buf, &buf)
	for field, fl := range flagForGenesisField {
		if !strings.Contains(buf.String(), "--"+fl+" ") && !strings.Contains(buf.String(), "--"+fl+"\n") {
			t.Errorf("field %s: no flag --%s in\n%s", field, fl, buf.String())
		}
	}
}

func TestGenesisRoundTrip(t *testing.T) {
	ids := peerIDs(t, 4)
	agg, members := ids[0], ids[1:]
	boot := "/ip4/127.0.0.1/tcp/4001/p2p/" + agg
	out := filepath.Join(t.TempDir(), "fed", "genesis.toml")
	args := genesisArgs(out, agg, members, "--name", "pilot", "--scenario", "fedavg-mnist", "--aggregation", "median",
		"--seed", "7", "--rounds", "5", "--per-round", "2", "--quorum", "2", "--min-updates", "1",
		"--round-timeout", "30s", "--retry", "2s", "--silence-timeout", "90s", "--max-update-bytes", "1000000",
		"--max-model-bytes", "2000000", "--chunk-bytes", "500000", "--bootstrap", boot,
		"--lr", "0.05", "--epochs", "2", "--batch", "16")
	code, stdout, stderr := runCLI(args...)
	if code != exitOK {
		t.Fatalf("node genesis: exit %d, stderr %s", code, stderr)
	}
	id := strings.TrimSpace(stdout)
	g, raw, err := genesis.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID() != id {
		t.Errorf("printed id %s, file's id %s", id, g.ID())
	}
	if !bytes.Contains(raw, []byte(id)) {
		t.Errorf("the file does not name its id %s", id)
	}
	want := genesis.Genesis{
		Name: "pilot", Aggregator: agg, Scenario: "fedavg-mnist", AggregatorName: "median", Seed: 7, Rounds: 5,
		PerRound: 2, Quorum: 2, MinUpdates: 1, RoundTimeout: genesis.Duration(30e9), Retry: genesis.Duration(2e9),
		SilenceTimeout: genesis.Duration(90e9), MaxUpdateBytes: 1000000, MaxModelBytes: 2000000, ChunkBytes: 500000,
	}
	got := *g
	if got.Name != want.Name || got.Aggregator != want.Aggregator || got.Scenario != want.Scenario ||
		got.AggregatorName != want.AggregatorName || got.Seed != want.Seed || got.Rounds != want.Rounds ||
		got.PerRound != want.PerRound || got.Quorum != want.Quorum || got.MinUpdates != want.MinUpdates ||
		got.RoundTimeout != want.RoundTimeout || got.Retry != want.Retry || got.SilenceTimeout != want.SilenceTimeout ||
		got.MaxUpdateBytes != want.MaxUpdateBytes || got.MaxModelBytes != want.MaxModelBytes || got.ChunkBytes != want.ChunkBytes {
		t.Errorf("genesis read back:\n%+v\nwant the flags':\n%+v", got, want)
	}
	if strings.Join(g.Members, ",") != strings.Join(members, ",") || len(g.Bootstrap) != 1 || g.Bootstrap[0] != boot {
		t.Errorf("members %v, bootstrap %v", g.Members, g.Bootstrap)
	}
	if p := g.Task; p.LR != 0.05 || p.Epochs != 2 || p.Batch != 16 {
		t.Errorf("task %+v", p)
	}

	// A second run refuses to overwrite; --force does, and the same flags
	// give the same id; the alias is the same command.
	if code, _, stderr := runCLI(args...); code != exitFailure || !strings.Contains(stderr, "refusing to overwrite") {
		t.Errorf("node genesis over an existing file: exit %d, stderr %q; want 1", code, stderr)
	}
	fargs := append([]string{"federation", "new"}, append(args[1:], "--force")...)
	if code, stdout, stderr := runCLI(fargs...); code != exitOK || strings.TrimSpace(stdout) != id {
		t.Errorf("node federation new --force: exit %d, id %q (want %s), stderr %q", code, stdout, id, stderr)
	}
	if code, _, stderr := runCLI("federation", "old"); code != exitUsage || !strings.Contains(stderr, `"old"`) {
		t.Errorf("node federation old: exit %d, stderr %q", code, stderr)
	}
}

func TestGenesisDefaults(t *testing.T) {
	ids := peerIDs(t, 3)
	out := filepath.Join(t.TempDir(), "genesis.toml")
	code, stdout, stderr := runCLI(genesisArgs(out, ids[0], ids[1:])...)
	if code != exitOK {
		t.Fatalf("node genesis: exit %d, stderr %s", code, stderr)
	}
	g, _, err := genesis.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID() != strings.TrimSpace(stdout) || g.Scenario != "frl-mnist" || g.Name != "frl-mnist" || g.Seed != 1 ||
		g.PerRound != 2 || g.Quorum != 2 || g.Rounds != 0 || g.RoundTimeout != genesis.Duration(defaultRoundTimeout) ||
		g.AggregatorName != genesis.Aggregations("frl-mnist")[0] {
		t.Errorf("defaults: %+v", g)
	}
	// frl-mnist's default ranking codec, written out (a file without it
	// means packed); packed stays selectable.
	if b, _ := os.ReadFile(out); g.Task.RankingCodec != task.DefaultRankingCodec ||
		!strings.Contains(string(b), `ranking_codec = "`+task.DefaultRankingCodec+`"`) {
		t.Errorf("ranking codec %q, want %s written out", g.Task.RankingCodec, task.DefaultRankingCodec)
	}
	packedOut := filepath.Join(t.TempDir(), "packed.toml")
	if code, _, stderr := runCLI(append(genesisArgs(packedOut, ids[0], ids[1:]), "--ranking-codec", "packed")...); code != exitOK {
		t.Fatalf("node genesis --ranking-codec packed: exit %d, stderr %s", code, stderr)
	}
	if p, _, err := genesis.Load(packedOut); err != nil || p.Task.RankingCodec != task.CodecPacked {
		t.Fatalf("--ranking-codec packed: %v, %+v", err, p)
	}
	// The frl-mnist genesis starts from the simulator's initial model.
	tk, err := g.BuildTask(task.Data{})
	if err != nil {
		t.Fatal(err)
	}
	compareWithSim(t, tk, "frl-mnist", g.Seed)
}

// compareWithSim checks that tk's initial model is the simulator's for the
// scenario and seed.
func compareWithSim(t *testing.T, tk task.Task, scenario string, seed uint64) {
	t.Helper()
	compareWithSimConfig(t, tk, simnet.Config{Scenario: scenario, Seed: seed})
}

// compareWithSimConfig is compareWithSim for a simulator run of other
// settings.
func compareWithSimConfig(t *testing.T, tk task.Task, c simnet.Config) {
	t.Helper()
	scenario, seed := c.Scenario, c.Seed
	cfg, sc, err := simnet.Resolve(c)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sc.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := st.InitialModel()
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.InitialModel()
	if err != nil {
		t.Fatal(err)
	}
	if gl, ok := tk.(*task.LoRA); ok {
		if sl, ok := st.(*task.LoRA); !ok || gl.Base().Hash != sl.Base().Hash {
			t.Errorf("%s seed %d: the genesis's base model is not the simulator's", scenario, seed)
		}
	}
	if gf, ok := tk.(*task.FRL); ok && gf.Base() != nil {
		if sf, ok := st.(*task.FRL); !ok || sf.Base() == nil || gf.Base().Hash != sf.Base().Hash {
			t.Errorf("%s seed %d: the genesis's base model is not the simulator's", scenario, seed)
		}
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s seed %d: the genesis's initial model (%d bytes, %x) is not the simulator's (%d bytes, %x)",
			scenario, seed, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// TestGenesisLoRA writes a lora-mnist genesis, whose base model is
// pre-trained (about 3 s), and checks it against the simulator's.
func TestGenesisLoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains a base model")
	}
	// A cache of our own: the base is trained here, not read from an
	// earlier run's cache.
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	ids := peerIDs(t, 3)
	dir := t.TempDir()
	out := filepath.Join(dir, "genesis.toml")
	const seed = 3
	code, stdout, stderr := runCLI(genesisArgs(out, ids[0], ids[1:], "--scenario", "lora-mnist", "--seed", "3", "--per-round", "1")...)
	if code != exitOK {
		t.Fatalf("node genesis: exit %d, stderr %s", code, stderr)
	}
	g, _, err := genesis.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID() != strings.TrimSpace(stdout) {
		t.Errorf("printed id %q, file's %s", stdout, g.ID())
	}
	base, err := os.ReadFile(filepath.Join(dir, baseModelFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(base)
	if g.Task.BaseModel != baseModelFile || g.Task.BaseModelHash != hex.EncodeToString(sum[:]) {
		t.Errorf("task.base_model %q, base_model_hash %q; want %q and the file's SHA-256 %x", g.Task.BaseModel, g.Task.BaseModelHash, baseModelFile, sum)
	}
	tk, err := g.BuildTask(task.Data{})
	if err != nil {
		t.Fatal(err)
	}
	compareWithSim(t, tk, "lora-mnist", seed)

	// The base model is not overwritten either.
	if err := os.Remove(out); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(genesisArgs(out, ids[0], ids[1:], "--scenario", "lora-mnist", "--seed", "3")...)
	if code != exitFailure || !strings.Contains(stderr, baseModelFile) {
		t.Errorf("node genesis over an existing base model: exit %d, stderr %q; want 1", code, stderr)
	}
}

// TestGenesisFRLLoRA writes a frl-lora-mnist genesis: its base model is
// lora-mnist's of the same seed (the same file), its settings are the
// flags' (and the ranking codec the simulator's default), and its task is
// the simulator's.
func TestGenesisFRLLoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains a base model")
	}
	ids := peerIDs(t, 3)
	dir := t.TempDir()
	out := filepath.Join(dir, "frl-lora", "genesis.toml")
	code, stdout, stderr := runCLI(genesisArgs(out, ids[0], ids[1:], "--scenario", "frl-lora-mnist", "--seed", "3", "--rank", "8", "--epochs", "1")...)
	if code != exitOK {
		t.Fatalf("node genesis: exit %d, stderr %s", code, stderr)
	}
	if !strings.Contains(stderr, "pre-training the base model of frl-lora-mnist") || !strings.Contains(stderr, "frl-lora-mnist, 2 members") {
		t.Errorf("stderr %q", stderr)
	}
	g, raw, err := genesis.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID() != strings.TrimSpace(stdout) {
		t.Errorf("printed id %q, file's %s", stdout, g.ID())
	}
	for _, line := range []string{`scenario = "frl-lora-mnist"`, `aggregation = "vote-clamp"`, "rank = 8", "epochs = 1",
		`ranking_codec = "` + task.DefaultRankingCodec + `"`, `base_model = "` + baseModelFile + `"`} {
		if !bytes.Contains(raw, []byte("\n"+line+"\n")) {
			t.Errorf("the genesis lacks %q:\n%s", line, raw)
		}
	}
	base, err := os.ReadFile(filepath.Join(filepath.Dir(out), baseModelFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(base)
	if g.Task.BaseModelHash != hex.EncodeToString(sum[:]) {
		t.Errorf("base_model_hash %q, the file's SHA-256 %x", g.Task.BaseModelHash, sum)
	}
	// lora-mnist of the same seed fine-tunes the same base.
	lora := filepath.Join(dir, "lora", "genesis.toml")
	if code, _, stderr := runCLI(genesisArgs(lora, ids[0], ids[1:], "--scenario", "lora-mnist", "--seed", "3")...); code != exitOK {
		t.Fatalf("node genesis lora-mnist: exit %d, stderr %s", code, stderr)
	}
	lg, _, err := genesis.Load(lora)
	if err != nil {
		t.Fatal(err)
	}
	if lg.Task.BaseModelHash != g.Task.BaseModelHash {
		t.Errorf("frl-lora-mnist's base %s, lora-mnist's of the same seed %s", g.Task.BaseModelHash, lg.Task.BaseModelHash)
	}
	tk, err := g.BuildTask(task.Data{})
	if err != nil {
		t.Fatal(err)
	}
	compareWithSimConfig(t, tk, simnet.Config{Scenario: "frl-lora-mnist", Seed: 3, Rank: 8, Epochs: 1})
	if info := tk.Info(); !strings.Contains(info.Model, "supermask adapters r=8") || info.DefaultAggregator != "vote-clamp" {
		t.Errorf("task %+v", info)
	}
}
