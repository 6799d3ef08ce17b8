package report

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
)

// Report is the result of a federated run, simulated (`node sim`) or real
// (`node status --json`): the report.json contract of DESIGN.md section 4.
// Field names are relied on by scripts; add, never rename.
type Report struct {
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	// Config is every effective setting of the run, in whatever type the
	// driver keeps them (a simnet.Config for the simulator), encoded as it
	// is; nil is written as {}. Decoded from JSON it is a map[string]any:
	// ConfigAs turns it back into a typed value.
	Config any           `json:"config"`
	Model  ModelInfo     `json:"model"`
	Rounds []RoundReport `json:"rounds"`
	// InitialAccuracy and InitialLoss score the model the run starts from
	// (round 0): a random supermask for FRL, the base model for fine-tuning.
	InitialAccuracy float64 `json:"initial_accuracy"`
	InitialLoss     float64 `json:"initial_loss"`
	FinalAccuracy   float64 `json:"final_accuracy"`
	BestAccuracy    float64 `json:"best_accuracy"`
	BytesUpTotal    int64   `json:"bytes_up_total"`
	BytesDownTotal  int64   `json:"bytes_down_total"`
	// BytesUpPerUpdate is the upload per peer and round: bytes_up_total over
	// the accepted updates (resends and rejected uploads included in the bytes).
	BytesUpPerUpdate float64 `json:"bytes_up_per_update"`
	WallSeconds      float64 `json:"wall_seconds"`
}

// ModelInfo names the model and identifies the final global model.
type ModelInfo struct {
	Name   string `json:"name"`
	Params int    `json:"params"`
	// Hash is the hex SHA-256 of the final global model's encoded bytes.
	Hash string `json:"hash"`
}

// RoundReport is one row of rounds.csv and one element of report.json's rounds.
type RoundReport struct {
	Round    uint64  `json:"round"`
	Accuracy float64 `json:"accuracy"`
	Loss     float64 `json:"loss"`
	Selected int     `json:"selected"`
	Accepted int     `json:"accepted"`
	Rejected int     `json:"rejected"`
	// RejectedByReason splits Rejected by why the aggregator refused each
	// update ("wrong-round", "bad-signature", ... as node.Reason names them);
	// absent when nothing was rejected or the driver does not tell reasons apart.
	RejectedByReason map[string]int `json:"rejected_by_reason,omitempty"`
	// Dropped is the number of accepted updates a robust aggregator left out
	// of the round's model (outliers of vote-robust, the updates Multi-Krum
	// did not pick); DroppedAttackers how many of them came from attackers
	// (the simulator knows; a daemon leaves it 0).
	Dropped          int `json:"dropped,omitempty"`
	DroppedAttackers int `json:"dropped_attackers,omitempty"`
	// Late counts updates that reached the aggregator after their round had
	// closed; Lost the updates the network lost (counted once per update,
	// however many resends were lost).
	Late int `json:"late,omitempty"`
	Lost int `json:"lost,omitempty"`
	// EdgeSelected and EdgeAccepted count the selected peers and the
	// accepted updates that were edge peers' (simnet's edge_peers: small
	// boards on slow uplinks, training at a lower adapter rank).
	EdgeSelected int `json:"edge_selected,omitempty"`
	EdgeAccepted int `json:"edge_accepted,omitempty"`
	// Faults names the faults that hit the round ("partition", "churn",
	// "aggregator-crash", ...), for the table and the plots.
	Faults    []string `json:"faults,omitempty"`
	BytesUp   int64    `json:"bytes_up"`
	BytesDown int64    `json:"bytes_down"`
	SimMs     float64  `json:"sim_ms"`
	WallMs    float64  `json:"wall_ms"`
	ModelHash string   `json:"model_hash"`
	// Metrics holds what an aggregator reports about its round, e.g. the
	// fraction of energy lora-svd's truncation dropped ("svd_dropped", and
	// per layer "svd_dropped_l0", ...).
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// ConfigAs returns r.Config as a C: the value itself when it holds a C, else
// C decoded from its JSON encoding, so that the config of a report read back
// from report.json (a map[string]any) becomes typed again. Fields of C that
// the config lacks stay zero; a nil config gives the zero C.
func ConfigAs[C any](r *Report) (C, error) {
	var c C
	switch v := r.Config.(type) {
	case nil:
		return c, nil
	case C:
		return v, nil
	case *C:
		if v != nil {
			return *v, nil
		}
		return c, nil
	}
	b, err := json.Marshal(r.Config)
	if err != nil {
		return c, fmt.Errorf("report: encoding config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("report: decoding config as %T: %w", c, err)
	}
	return c, nil
}

// settings are the parts of a run's config that the table and the chart
// show. Every driver's config is read through its JSON names, so a setting
// a driver lacks is simply zero.
type settings struct {
	Aggregator string  `json:"aggregator"`
	Peers      int     `json:"peers"`
	PerRound   int     `json:"per_round"`
	Rounds     int     `json:"rounds"`
	Partition  string  `json:"partition"`
	Attackers  float64 `json:"attackers"`
	Attack     string  `json:"attack"`
	Net        string  `json:"net"`
	Crash      float64 `json:"crash"`
}

// settingsOf reads r's settings as best it can: a setting of another type
// than settings expects (or a config JSON cannot encode) is left zero rather
// than failing a summary over it.
func settingsOf(r *Report) settings {
	s, _ := ConfigAs[settings](r)
	return s
}

// nonFinite finds a NaN or infinite float in v, a config of any type: it
// walks structs (naming fields by their JSON names), maps, slices, arrays,
// pointers and interfaces, and returns the dotted path of the first such
// float below prefix.
func nonFinite(prefix string, v reflect.Value) (path string, f float64, found bool) {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			return prefix, f, true
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return nonFinite(prefix, v.Elem())
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			// As encoding/json: an unexported field is skipped, unless it
			// embeds a struct, whose exported fields are promoted.
			if !sf.IsExported() && !(sf.Anonymous && ft.Kind() == reflect.Struct) {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			switch {
			case name == "-":
				continue
			case sf.Anonymous && name == "":
				name = prefix // an embedded struct's fields are promoted to its parent's level
			case name == "":
				name = prefix + "." + sf.Name
			default:
				name = prefix + "." + name
			}
			if p, f, ok := nonFinite(name, v.Field(i)); ok {
				return p, f, true
			}
		}
	case reflect.Map:
		keys := v.MapKeys()
		// fmt prints what a reflect.Value holds, even one Interface would
		// refuse (reached through an embedded unexported struct).
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
		})
		for _, k := range keys {
			if p, f, ok := nonFinite(fmt.Sprintf("%s.%v", prefix, k), v.MapIndex(k)); ok {
				return p, f, true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if p, f, ok := nonFinite(fmt.Sprintf("%s[%d]", prefix, i), v.Index(i)); ok {
				return p, f, true
			}
		}
	}
	return "", 0, false
}
