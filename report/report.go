// Package report holds the vocabulary of a federated run's results (Report,
// RoundReport, ModelInfo), shared by the simulator and the daemon, and writes
// them in the forms of DESIGN.md section 4: report.json, rounds.csv,
// accuracy.png, and the human-readable summary that `node sim` prints. It
// knows neither driver: a run's config is whatever value the driver gives.
package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
)

// File names written by WriteDir (and NetworkPNGFile).
const (
	JSONFile = "report.json"
	CSVFile  = "rounds.csv"
	PNGFile  = "accuracy.png"
)

// CSVHeader is the header row of rounds.csv: the JSON names of
// RoundReport's scalar fields (the maps, RejectedByReason and the
// per-aggregator Metrics, vary from run to run and are in report.json only).
// The first eleven are the original columns, in their original order; the
// columns added since follow them, so that scripts reading columns by
// position keep working. faults is the round's Faults joined by ";".
var CSVHeader = []string{
	"round", "accuracy", "loss", "selected", "accepted", "rejected",
	"bytes_up", "bytes_down", "sim_ms", "wall_ms", "model_hash",
	"dropped", "dropped_attackers", "late", "lost", "faults",
	"edge_selected", "edge_accepted",
}

// WriteJSON writes r as indented JSON followed by a newline. JSON has no NaN
// or infinity, so a report holding one is an error that names the field
// rather than a file that scripts cannot parse.
func WriteJSON(w io.Writer, r *Report) error {
	if err := checkFinite(r); err != nil {
		return err
	}
	out := *r
	if out.Rounds == nil {
		out.Rounds = []RoundReport{} // "rounds": [] rather than null
	}
	if out.Config == nil {
		out.Config = struct{}{} // "config": {} rather than null
	}
	b, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return fmt.Errorf("report: encoding JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

func checkFinite(r *Report) error {
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"final_accuracy", r.FinalAccuracy},
		{"best_accuracy", r.BestAccuracy},
		{"wall_seconds", r.WallSeconds},
		{"bytes_up_per_update", r.BytesUpPerUpdate},
		{"initial_accuracy", r.InitialAccuracy},
		{"initial_loss", r.InitialLoss},
	} {
		if bad(f.v) {
			return fmt.Errorf("report: %s is %v, which JSON cannot hold", f.name, f.v)
		}
	}
	if name, v, ok := nonFinite("config", reflect.ValueOf(r.Config)); ok {
		return fmt.Errorf("report: %s is %v, which JSON cannot hold", name, v)
	}
	for _, rr := range r.Rounds {
		for _, f := range []struct {
			name string
			v    float64
		}{
			{"accuracy", rr.Accuracy}, {"loss", rr.Loss}, {"sim_ms", rr.SimMs}, {"wall_ms", rr.WallMs},
		} {
			if bad(f.v) {
				return fmt.Errorf("report: round %d %s is %v, which JSON cannot hold", rr.Round, f.name, f.v)
			}
		}
		for name, v := range rr.Metrics {
			if bad(v) {
				return fmt.Errorf("report: round %d metric %s is %v, which JSON cannot hold", rr.Round, name, v)
			}
		}
	}
	return nil
}

// WriteCSV writes one row per round under CSVHeader. Floats are written in
// the shortest form that parses back to the same value.
func WriteCSV(w io.Writer, rounds []RoundReport) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	ff := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	for _, r := range rounds {
		row := []string{
			strconv.FormatUint(r.Round, 10),
			ff(r.Accuracy),
			ff(r.Loss),
			strconv.Itoa(r.Selected),
			strconv.Itoa(r.Accepted),
			strconv.Itoa(r.Rejected),
			strconv.FormatInt(r.BytesUp, 10),
			strconv.FormatInt(r.BytesDown, 10),
			ff(r.SimMs),
			ff(r.WallMs),
			r.ModelHash,
			strconv.Itoa(r.Dropped),
			strconv.Itoa(r.DroppedAttackers),
			strconv.Itoa(r.Late),
			strconv.Itoa(r.Lost),
			strings.Join(r.Faults, ";"),
			strconv.Itoa(r.EdgeSelected),
			strconv.Itoa(r.EdgeAccepted),
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteDir writes report.json, rounds.csv, accuracy.png and network.png into
// dir, creating it if needed. All four are encoded before any is written, and each is
// written to a temporary file in dir and renamed into place, so a reader never
// sees a half-written file and an encoding error changes nothing.
func WriteDir(dir string, r *Report) error {
	var jsonBuf, csvBuf, pngBuf, netBuf bytes.Buffer
	if err := WriteJSON(&jsonBuf, r); err != nil {
		return err
	}
	if err := WriteCSV(&csvBuf, r.Rounds); err != nil {
		return fmt.Errorf("report: encoding CSV: %w", err)
	}
	if err := WritePNG(&pngBuf, r); err != nil {
		return fmt.Errorf("report: encoding PNG: %w", err)
	}
	if err := WriteNetworkPNG(&netBuf, r); err != nil {
		return fmt.Errorf("report: encoding PNG: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{CSVFile, csvBuf.Bytes()},
		{PNGFile, pngBuf.Bytes()},
		{NetworkPNGFile, netBuf.Bytes()},
		// Last, so that a new report.json implies the others are in place.
		{JSONFile, jsonBuf.Bytes()},
	} {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	return nil
}

// WriteFileAtomic writes data to path through a synced temporary file in
// the same directory and a rename (mode 0644): readers see the old file or
// the new one, never a part.
func WriteFileAtomic(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600 files
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
