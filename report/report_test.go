package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// runConfig stands for a driver's config (simnet.Config has these fields and
// more): package report knows it only through its JSON names.
type runConfig struct {
	Scenario       string  `json:"scenario"`
	Peers          int     `json:"peers"`
	PerRound       int     `json:"per_round"`
	Rounds         int     `json:"rounds"`
	Seed           uint64  `json:"seed"`
	Partition      string  `json:"partition"`
	Aggregator     string  `json:"aggregator"`
	Attackers      float64 `json:"attackers"`
	Attack         string  `json:"attack"`
	Net            string  `json:"net"`
	Crash          float64 `json:"crash"`
	Quorum         float64 `json:"quorum"`
	RoundTimeoutMs int64   `json:"round_timeout_ms"`
	Workers        int     `json:"workers"`
}

// sample is a plausible report of n rounds.
func sample(n int) *Report {
	r := &Report{
		Scenario: "frl-mnist",
		Seed:     7,
		Config: runConfig{
			Scenario: "frl-mnist", Peers: 100, PerRound: 10, Rounds: n, Seed: 7,
			Partition: "dirichlet:0.5", Aggregator: "vote", Attackers: 0.2, Attack: "reverse",
			Net: "wan", Crash: 0.05, Quorum: 0.8, RoundTimeoutMs: 30000, Workers: 4,
		},
		Model: ModelInfo{Name: "lenet-300-100 supermask", Params: 266200, Hash: strings.Repeat("ab", 32)},
	}
	for i := 1; i <= n; i++ {
		acc := 0.95 - 0.85*math.Exp(-float64(i)/4)
		rr := RoundReport{
			Round: uint64(i), Accuracy: acc, Loss: 2.3 * (1 - acc), Selected: 10, Accepted: 9, Rejected: 1,
			BytesUp: 33275 * 9, BytesDown: 1064800 * 10, SimMs: 812.5 + float64(i), WallMs: 1210.25,
			ModelHash: fmt.Sprintf("%064x", i),
		}
		r.Rounds = append(r.Rounds, rr)
		r.BytesUpTotal += rr.BytesUp
		r.BytesDownTotal += rr.BytesDown
		r.FinalAccuracy = acc
		r.BestAccuracy = max(r.BestAccuracy, acc)
	}
	r.WallSeconds = 1.25 * float64(n)
	return r
}

func TestJSONRoundTrip(t *testing.T) {
	want := sample(12)
	var buf bytes.Buffer
	if err := WriteJSON(&buf, want); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("{\n  \"scenario\"")) || !bytes.HasSuffix(buf.Bytes(), []byte("}\n")) {
		t.Errorf("not indented JSON ending in a newline:\n%s", buf.Bytes())
	}
	var got Report
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Config.(map[string]any); !ok {
		t.Errorf("decoded config is a %T, want a map[string]any", got.Config)
	}
	cfg, err := ConfigAs[runConfig](&got)
	if err != nil || cfg != want.Config {
		t.Errorf("ConfigAs: %+v, %v; want %+v", cfg, err, want.Config)
	}
	got.Config = cfg
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("round trip changed the report:\ngot  %+v\nwant %+v", got, *want)
	}

	// The keys of DESIGN.md section 4 that scripts rely on.
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "seed", "config", "model", "rounds", "final_accuracy",
		"best_accuracy", "bytes_up_total", "bytes_down_total", "wall_seconds"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report.json lacks %q", k)
		}
	}
	round := m["rounds"].([]any)[0].(map[string]any)
	for _, k := range CSVHeader[:len(legacyCSVHeader)] { // the others are omitted when zero
		if _, ok := round[k]; !ok {
			t.Errorf("rounds[0] lacks %q", k)
		}
	}
}

func TestJSONEmptyRoundsIsArray(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, &Report{Scenario: "x"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"rounds": []`) {
		t.Errorf("want \"rounds\": [], got\n%s", buf.String())
	}
}

func TestJSONNonFiniteNamesField(t *testing.T) {
	r := sample(3)
	r.Rounds[1].Loss = math.Inf(1)
	err := WriteJSON(&bytes.Buffer{}, r)
	if err == nil || !strings.Contains(err.Error(), "round 2 loss") {
		t.Fatalf("want an error naming round 2 loss, got %v", err)
	}
}

// legacyCSVHeader is rounds.csv's header before columns were added: scripts
// read these by position, so they stay first and in this order.
var legacyCSVHeader = []string{
	"round", "accuracy", "loss", "selected", "accepted", "rejected",
	"bytes_up", "bytes_down", "sim_ms", "wall_ms", "model_hash",
}

func TestCSVHeaderMatchesJSONNames(t *testing.T) {
	typ := reflect.TypeFor[RoundReport]()
	var names []string
	for i := range typ.NumField() {
		if typ.Field(i).Type.Kind() == reflect.Map {
			continue // per-aggregator metrics: report.json only
		}
		names = append(names, strings.Split(typ.Field(i).Tag.Get("json"), ",")[0])
	}
	if !reflect.DeepEqual(CSVHeader[:len(legacyCSVHeader)], legacyCSVHeader) {
		t.Errorf("CSVHeader %v does not start with the original columns %v", CSVHeader, legacyCSVHeader)
	}
	got, want := slices.Sorted(slices.Values(CSVHeader)), slices.Sorted(slices.Values(names))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RoundReport's JSON fields are %v, CSVHeader is %v; update WriteCSV (new columns go at the end)", names, CSVHeader)
	}
}

func TestCSVRoundTrip(t *testing.T) {
	want := sample(5)
	want.Rounds[2].Loss = math.NaN() // CSV can hold what JSON cannot
	want.Rounds[1].Dropped, want.Rounds[1].DroppedAttackers, want.Rounds[1].Late, want.Rounds[1].Lost = 3, 2, 1, 4
	want.Rounds[3].Faults = []string{"partition", "churn"}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, want.Rounds); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0], CSVHeader) {
		t.Fatalf("header %v, want %v", recs[0], CSVHeader)
	}
	if len(recs) != 1+len(want.Rounds) {
		t.Fatalf("%d rows, want %d", len(recs)-1, len(want.Rounds))
	}
	for i, rec := range recs[1:] {
		got := parseRow(t, rec)
		w := want.Rounds[i]
		if math.IsNaN(w.Loss) && math.IsNaN(got.Loss) {
			got.Loss, w.Loss = 0, 0
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("row %d: got %+v, want %+v", i+1, got, w)
		}
	}
}

func parseRow(t *testing.T, rec []string) RoundReport {
	t.Helper()
	f := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	i := func(s string) int64 {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var faults []string
	if rec[15] != "" {
		faults = strings.Split(rec[15], ";")
	}
	return RoundReport{
		Round: uint64(i(rec[0])), Accuracy: f(rec[1]), Loss: f(rec[2]),
		Selected: int(i(rec[3])), Accepted: int(i(rec[4])), Rejected: int(i(rec[5])),
		BytesUp: i(rec[6]), BytesDown: i(rec[7]), SimMs: f(rec[8]), WallMs: f(rec[9]), ModelHash: rec[10],
		Dropped: int(i(rec[11])), DroppedAttackers: int(i(rec[12])), Late: int(i(rec[13])), Lost: int(i(rec[14])),
		Faults: faults,
	}
}

func TestPNG(t *testing.T) {
	for _, n := range []int{0, 1, 2, 30, 500} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			var buf bytes.Buffer
			if err := WritePNG(&buf, sample(n)); err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != ChartWidth || b.Dy() != ChartHeight {
				t.Fatalf("size %v, want %dx%d", b.Size(), ChartWidth, ChartHeight)
			}
			var ink, series int
			for y := 0; y < ChartHeight; y++ {
				for x := 0; x < ChartWidth; x++ {
					r, g, b, _ := img.At(x, y).RGBA()
					if r>>8 != 255 || g>>8 != 255 || b>>8 != 255 {
						ink++
					}
					if uint8(r>>8) == ColorSeries.R && uint8(g>>8) == ColorSeries.G && uint8(b>>8) == ColorSeries.B {
						series++
					}
				}
			}
			if ink < 2000 { // frame, grid and labels alone are more than this
				t.Errorf("only %d non-background pixels", ink)
			}
			if n > 0 && series < 10 {
				t.Errorf("only %d pixels of the series colour: no line drawn?", series)
			}
			if n == 0 && series != 0 {
				t.Errorf("%d series pixels with no rounds", series)
			}
		})
	}
}

func TestYRangeZoomsOnHighAccuracy(t *testing.T) {
	r := sample(3)
	for i := range r.Rounds {
		r.Rounds[i].Accuracy = 0.93 + 0.01*float64(i)
	}
	lo, hi, step := yRange(r.Rounds)
	if lo != 0.9 || hi != 1 || step != 0.01 {
		t.Errorf("yRange = %v, %v, %v; want 0.9, 1, 0.01", lo, hi, step)
	}
	r.Rounds[0].Accuracy = 0.1
	if lo, hi, step = yRange(r.Rounds); lo != 0 || hi != 1 || step != 0.1 {
		t.Errorf("yRange = %v, %v, %v; want 0, 1, 0.1", lo, hi, step)
	}
}

func TestTable(t *testing.T) {
	var buf bytes.Buffer
	r := sample(12)
	r.InitialAccuracy, r.BytesUpPerUpdate = 0.1038, 33275
	if err := Table(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"frl-mnist", "vote", "dirichlet:0.5", "100", "seed", "0.2 reverse",
		"accepted/selected", "9/10", "KB up",
		"final accuracy  0.9077", "best accuracy   0.9077 (round 12)",
		"start accuracy  0.1038", "bytes up        3.59 MB (33.3 KB per accepted update)", "bytes down      128 MB",
		"15.0 s (1.25 s/round)", strings.Repeat("ab", 32),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for i := 1; i <= 12; i++ { // every round of a short run
		if !regexpRow(out, i) {
			t.Errorf("table lacks round %d:\n%s", i, out)
		}
	}
}

func TestTableThinsLongRuns(t *testing.T) {
	var buf bytes.Buffer
	if err := Table(&buf, sample(103)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, i := range []int{1, 5, 50, 100, 103} {
		if !regexpRow(out, i) {
			t.Errorf("table lacks round %d:\n%s", i, out)
		}
	}
	for _, i := range []int{2, 51, 102} {
		if regexpRow(out, i) {
			t.Errorf("table shows round %d of a thinned run:\n%s", i, out)
		}
	}
}

// regexpRow reports whether out has a table row for round i.
func regexpRow(out string, i int) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 9 && f[0] == strconv.Itoa(i) {
			return true
		}
	}
	return false
}

func TestTableNoRounds(t *testing.T) {
	var buf bytes.Buffer
	if err := Table(&buf, &Report{Scenario: "frl-mnist"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "no rounds completed") {
		t.Errorf("got\n%s", buf.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 999: "999 B", 1000: "1.00 KB", 12345: "12.3 KB", 4_560_000: "4.56 MB",
		123_456_789: "123 MB", 1_200_000_000: "1.20 GB",
	} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "out")
	r := sample(4)
	if err := WriteDir(dir, r); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{PNGFile, NetworkPNGFile, JSONFile, CSVFile}; !reflect.DeepEqual(names, want) {
		t.Errorf("dir holds %v, want %v (and no temporary files)", names, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b, &got); err != nil || got.Model.Hash != r.Model.Hash {
		t.Errorf("report.json: %v, hash %q", err, got.Model.Hash)
	}
	fi, err := os.Stat(filepath.Join(dir, CSVFile))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("rounds.csv: %v, mode %v", err, fi.Mode())
	}

	// A failed write leaves no temporary file behind and the old file intact.
	r.Rounds[0].Accuracy = math.NaN()
	if err := WriteDir(dir, r); err == nil {
		t.Fatal("want an error for a NaN accuracy")
	}
	entries, _ = os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("after a failed write the dir holds %d entries, want 4", len(entries))
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, JSONFile)); !bytes.Equal(b, b2) {
		t.Error("a failed write changed report.json")
	}
}

func TestJSONNilConfigIsObject(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, &Report{Scenario: "x"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"config": {}`) {
		t.Errorf("want \"config\": {}, got\n%s", buf.String())
	}
}

func TestJSONNonFiniteConfigNamesField(t *testing.T) {
	type inner struct {
		Limit float64 `json:"limit"`
	}
	type embedded struct {
		Scale float32
		Opts  map[string]float64 `json:"opts"`
	}
	type daemonConfig struct {
		embedded
		Name   string           `json:"name"`
		Hidden float64          `json:"-"`
		Inner  *inner           `json:"inner"`
		Tuning map[string]any   `json:"tuning"`
		Quorum []float64        `json:"quorum"`
		Extra  map[int]struct{} `json:"extra"`
	}
	inf, nan := math.Inf(1), math.NaN()
	for _, tt := range []struct {
		cfg  any
		want string // "" = no error
	}{
		{runConfig{Crash: nan}, "config.crash is NaN"},
		{&runConfig{Attackers: inf}, "config.attackers is +Inf"},
		{daemonConfig{Hidden: nan}, ""}, // not in the JSON
		{daemonConfig{Inner: &inner{Limit: -inf}}, "config.inner.limit is -Inf"},
		{daemonConfig{embedded: embedded{Scale: float32(nan)}}, "config.Scale is NaN"},
		{daemonConfig{embedded: embedded{Opts: map[string]float64{"b": 1, "a": nan}}}, "config.opts.a is NaN"},
		{daemonConfig{Tuning: map[string]any{"b": 1.0, "a": []any{0.5, inf}}}, "config.tuning.a[1] is +Inf"},
		{daemonConfig{Quorum: []float64{0.5, nan}}, "config.quorum[1] is NaN"},
		{map[string]float64{"quorum": nan}, "config.quorum is NaN"},
		{runConfig{Crash: 0.1}, ""},
	} {
		r := sample(2)
		r.Config = tt.cfg
		err := WriteJSON(io.Discard, r)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v", tt.cfg, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: error %v, want one saying %q", tt.cfg, err, tt.want)
		}
	}
	r := sample(2)
	r.BytesUpPerUpdate = nan
	if err := WriteJSON(io.Discard, r); err == nil || !strings.Contains(err.Error(), "bytes_up_per_update") {
		t.Errorf("NaN bytes_up_per_update: %v", err)
	}
}

func TestRejectedByReason(t *testing.T) {
	r := sample(2)
	var buf bytes.Buffer
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "rejected_by_reason") {
		t.Errorf("rejected_by_reason written without reasons:\n%s", buf.String())
	}
	r.Rounds[1].RejectedByReason = map[string]int{"wrong-round": 1, "bad-signature": 2}
	buf.Reset()
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"rejected_by_reason": {
        "bad-signature": 2,
        "wrong-round": 1
      },`) {
		t.Errorf("rejected_by_reason not written as expected:\n%s", buf.String())
	}
	var got Report
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Rounds[1].RejectedByReason, r.Rounds[1].RejectedByReason) || got.Rounds[0].RejectedByReason != nil {
		t.Errorf("decoded %v and %v", got.Rounds[0].RejectedByReason, got.Rounds[1].RejectedByReason)
	}
	// rounds.csv keeps its columns.
	buf.Reset()
	if err := WriteCSV(&buf, r.Rounds); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(buf.String(), "\n"); first != strings.Join(CSVHeader, ",") {
		t.Errorf("CSV header %q", first)
	}
}

func TestConfigAs(t *testing.T) {
	want := runConfig{Peers: 5, Partition: "iid", Crash: 0.25}
	for _, tt := range []struct {
		name string
		cfg  any
		want runConfig
	}{
		{"value", want, want},
		{"pointer", &want, want},
		{"nil pointer", (*runConfig)(nil), runConfig{}},
		{"nil", nil, runConfig{}},
		{"map", map[string]any{"peers": 5, "partition": "iid", "crash": 0.25, "unknown": true}, want},
		{"raw JSON", json.RawMessage(`{"peers":5,"partition":"iid","crash":0.25}`), want},
		{"other struct", struct {
			Peers int `json:"peers"`
		}{5}, runConfig{Peers: 5}},
	} {
		got, err := ConfigAs[runConfig](&Report{Config: tt.cfg})
		if err != nil || got != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
	if _, err := ConfigAs[runConfig](&Report{Config: map[string]any{"peers": "five"}}); err == nil {
		t.Error("a string peers decoded into an int without an error")
	}
}

// TestTableFromDecodedReport checks that a report read back from report.json,
// whose config is a map, prints as the original does; and that a config of
// the wrong shape costs only the settings it gets wrong.
func TestTableFromDecodedReport(t *testing.T) {
	r := sample(5)
	var orig, js, back bytes.Buffer
	if err := Table(&orig, r); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if err := Table(&back, &got); err != nil {
		t.Fatal(err)
	}
	if orig.String() != back.String() {
		t.Errorf("table of the decoded report differs:\n%s\nwant\n%s", back.String(), orig.String())
	}
	if !strings.Contains(subtitle(&got), "100 peers, 10 per round, dirichlet:0.5, attackers 0.2 reverse, net wan, crash 0.05, seed 7") {
		t.Errorf("subtitle %q", subtitle(&got))
	}

	got.Config = map[string]any{"peers": "many", "aggregator": "fedavg"}
	back.Reset()
	if err := Table(&back, &got); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(back.String(), "fedavg") || !strings.Contains(back.String(), "peers     0") {
		t.Errorf("table of an odd config:\n%s", back.String())
	}
}
