// Package sweep runs grids of simulations: a sweep file names base settings
// and lists of values to cross (scenarios x aggregators x attacks x attacker
// fractions x network profiles x seeds, and any other simnet.Config field);
// every combination is a cell, one simnet.Run. Finished cells are cached on
// disk by the hash of their effective config, so that an interrupted sweep
// resumes where it stopped, and the cells that differ only by seed are
// summarised together: mean, standard deviation and Student-t 95% interval
// of each metric, tables (CSV, Markdown) and plots with error bands.
//
// # File format
//
// TOML or JSON (by the file's extension), with these keys:
//
//	name = "robustness"            # optional; default: the file's base name
//	description = "..."            # optional, printed above summary.md's table
//	[base]                         # settings every cell shares: simnet.Config fields by JSON name
//	peers = 1000
//	rounds = 30
//	# The axes, crossed in this order (seeds innermost); each a non-empty list:
//	scenarios   = ["frl-mnist"]            # Config.scenario
//	aggregators = ["vote", "vote-robust"]  # Config.aggregator
//	attacks     = ["reverse"]              # Config.attack
//	fractions   = [0, 0.2]                 # Config.attackers, each in [0, 1]
//	nets        = ["ideal", "wan"]         # Config.net
//	seeds       = [1, 2, 3]                # Config.seed
//	[vary]                                 # any other field, by JSON name
//	crash = [0, 0.1]
//	[plot]                                 # optional
//	lines = "aggregator"                   # the field whose values are a chart's lines
//	band = "sd"                            # "sd" (mean ± 1 sd) or "ci95" (Student t)
//	metrics = ["accuracy", "loss"]         # per-round metrics to plot
//	[table]                                # optional: a pivot table in summary.md
//	rows = ["scenario", "aggregator"]
//	columns = ["attack", "attackers"]
//	metric = "final_accuracy"
//
// A fraction of 0 means no attack: its cells run without an attack, and the
// attacks axis collapses into one baseline cell per seed.
//
// A file may instead hold several grids, [[grid]] tables each with its own
// name, base (added to the top-level base) and axes; the top-level axes are
// the defaults of every grid (a grid's own list replaces one). Different
// scenarios, whose aggregators and attacks differ, are different grids.
//
// Every cell is resolved with simnet.Resolve before any runs: a bad setting
// is a *FieldError naming where the file sets it ("grid[2].aggregators",
// "base.peers"). So is a zero that the scenario's default would replace
// (simnet.Config cannot tell 0 from unset).
package sweep

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/fedrank/fedrank/simnet"
)

// FieldError is a bad sweep file or setting. Field is where it is, as the
// file spells it: "aggregators", "grid[2].base.peers", "vary.crash[1]"; ""
// for a file that does not parse at all.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Msg)
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Spec is a parsed sweep file.
type Spec struct {
	Name        string
	Description string
	Grids       []Grid
	Plot        PlotSpec
	Table       TableSpec
	filters     []filter // of Only
}

// Grid is one grid of a sweep: its settings and the axes to cross.
type Grid struct {
	Name string
	// Path prefixes the names of its keys in errors: "" for a file
	// without [[grid]] tables, else "grid[i]." (from 1).
	Path string
	Base []Setting
	Axes []Axis
}

// Setting is one field of simnet.Config given one value.
type Setting struct {
	Field string // JSON name
	Key   string // where the file gives it, e.g. "base.peers"
	Value any    // of the field's type
}

// Axis is one field of simnet.Config given a list of values to cross.
type Axis struct {
	Field  string // JSON name
	Key    string // where the file gives it, e.g. "grid[1].aggregators"
	Values []any  // of the field's type
}

// PlotSpec says how the per-round plots are drawn.
type PlotSpec struct {
	// Lines is the field whose values are the lines of a chart; the other
	// fields that vary make separate charts. "" = aggregator when it varies,
	// else the first field that varies.
	Lines string
	// Band is "sd" (mean ± one standard deviation over seeds) or "ci95"
	// (the Student-t 95% interval of the mean).
	Band string
	// Metrics are the per-round metrics to plot (RoundMetrics).
	Metrics []string
}

// TableSpec asks for a pivot table of one metric in summary.md: a row per
// combination of the Rows fields, a column per combination of the Columns
// fields. Empty Rows: no pivot table.
type TableSpec struct {
	Rows, Columns []string
	Metric        string
}

// namedAxes are the axis keys with their own names, in crossing order, and
// the simnet.Config fields they set.
var namedAxes = []struct{ key, field string }{
	{"scenarios", "scenario"},
	{"aggregators", "aggregator"},
	{"attacks", "attack"},
	{"fractions", "attackers"},
	{"nets", "net"},
	{"seeds", "seed"},
}

// configField is a field of simnet.Config.
type configField struct {
	index int
	typ   reflect.Type
}

var (
	configFields = map[string]configField{} // by JSON name
	fieldOrder   []string                   // JSON names in declaration order
	// labelOrder is the order of the fields in labels and tables: the named
	// axes' fields, the other fields in declaration order, seed last.
	labelOrder []string
)

func init() {
	t := reflect.TypeFor[simnet.Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		configFields[name] = configField{i, f.Type}
		fieldOrder = append(fieldOrder, name)
	}
	for _, a := range namedAxes {
		if a.field != "seed" {
			labelOrder = append(labelOrder, a.field)
		}
	}
	for _, f := range fieldOrder {
		if !slices.Contains(labelOrder, f) && f != "seed" {
			labelOrder = append(labelOrder, f)
		}
	}
	labelOrder = append(labelOrder, "seed")
}

// Fields lists simnet.Config's settings by JSON name, in declaration order.
func Fields() []string { return slices.Clone(fieldOrder) }

// Load reads and parses a sweep file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse parses a sweep file's contents; name's extension (.toml, .json)
// says which format it is in, and its base name is the sweep's default name.
func Parse(name string, b []byte) (*Spec, error) {
	var raw map[string]any
	switch ext := strings.ToLower(filepath.Ext(name)); ext {
	case ".toml":
		if _, err := toml.Decode(string(b), &raw); err != nil {
			return nil, &FieldError{Msg: "malformed TOML: " + err.Error()}
		}
	case ".json":
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&raw); err != nil {
			return nil, &FieldError{Msg: "malformed JSON: " + jsonErr(b, err)}
		}
		if d.More() {
			return nil, &FieldError{Msg: "malformed JSON: more than one value"}
		}
		if raw == nil {
			return nil, &FieldError{Msg: "malformed JSON: want an object"}
		}
	default:
		return nil, &FieldError{Msg: fmt.Sprintf("%s: a sweep file is .toml or .json, not %q", filepath.Base(name), ext)}
	}
	s := &Spec{Name: strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))}
	if err := s.parse(raw); err != nil {
		return nil, err
	}
	return s, nil
}

// jsonErr names the line of a JSON syntax error.
func jsonErr(b []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(b[:min(int(se.Offset), len(b))], []byte("\n"))
		return fmt.Sprintf("line %d: %v", line, err)
	}
	return err.Error()
}

func (s *Spec) parse(raw map[string]any) error {
	topKeys := []string{"name", "description", "base", "grid", "vary", "plot", "table"}
	gridKeys := []string{"name", "base", "vary"}
	for _, a := range namedAxes {
		topKeys = append(topKeys, a.key)
		gridKeys = append(gridKeys, a.key)
	}
	if err := checkKeys(raw, "", topKeys); err != nil {
		return err
	}
	var err error
	if s.Name, err = optString(raw, "name", s.Name); err != nil {
		return err
	}
	if s.Description, err = optString(raw, "description", ""); err != nil {
		return err
	}
	base, err := parseBase(raw["base"], "base")
	if err != nil {
		return err
	}
	topAxes, err := parseAxes(raw, "")
	if err != nil {
		return err
	}
	if s.Plot, err = parsePlot(raw["plot"]); err != nil {
		return err
	}
	if s.Table, err = parseTable(raw["table"]); err != nil {
		return err
	}

	gridsRaw, ok := raw["grid"]
	if !ok {
		g := Grid{Name: s.Name, Base: base, Axes: topAxes}
		if err := g.check(); err != nil {
			return err
		}
		s.Grids = []Grid{g}
		return nil
	}
	list, ok := asList(gridsRaw)
	if !ok || len(list) == 0 {
		return fieldErr("grid", "want a non-empty list of tables ([[grid]])")
	}
	for i, gr := range list {
		path := fmt.Sprintf("grid[%d]", i+1)
		m, ok := gr.(map[string]any)
		if !ok {
			return fieldErr(path, "want a table")
		}
		if err := checkKeys(m, path+".", gridKeys); err != nil {
			return err
		}
		g := Grid{Path: path + "."}
		if g.Name, err = optString(m, "name", path); err != nil {
			return fieldErr(path+".name", "want a string")
		}
		own, err := parseBase(m["base"], path+".base")
		if err != nil {
			return err
		}
		// The grid's base adds to the top-level one, and may override it.
		g.Base = slices.Clone(base)
		for _, st := range own {
			g.Base = slices.DeleteFunc(g.Base, func(b Setting) bool { return b.Field == st.Field })
			g.Base = append(g.Base, st)
		}
		axes, err := parseAxes(m, path+".")
		if err != nil {
			return err
		}
		// The grid's axes replace the top-level axes of the same field.
		for _, a := range topAxes {
			if !slices.ContainsFunc(axes, func(b Axis) bool { return b.Field == a.Field }) {
				axes = append(axes, a)
			}
		}
		g.Axes = sortAxes(axes)
		if err := g.check(); err != nil {
			return err
		}
		s.Grids = append(s.Grids, g)
	}
	return nil
}

// check rejects a field given both in the base and as an axis.
func (g *Grid) check() error {
	for _, a := range g.Axes {
		for _, b := range g.Base {
			if a.Field == b.Field {
				return fieldErr(b.Key, "%s is also an axis (%s); give it in one place", a.Field, a.Key)
			}
		}
	}
	return nil
}

// checkKeys rejects a key of m not in allowed.
func checkKeys(m map[string]any, path string, allowed []string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return fieldErr(path+k, "unknown key (have: %s)", strings.Join(allowed, ", "))
		}
	}
	return nil
}

func optString(m map[string]any, key, def string) (string, error) {
	v, ok := m[key]
	if !ok {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fieldErr(key, "want a string")
	}
	return s, nil
}

func asList(v any) ([]any, bool) {
	switch l := v.(type) {
	case []any:
		return l, true
	case []map[string]any: // TOML's arrays of tables
		out := make([]any, len(l))
		for i, m := range l {
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

// parseBase reads a table of settings.
func parseBase(v any, path string) ([]Setting, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fieldErr(path, "want a table of settings")
	}
	var out []Setting
	for _, name := range sortedKeys(m) {
		key := path + "." + name
		if _, ok := configFields[name]; !ok {
			return nil, fieldErr(key, "unknown setting (have: %s)", strings.Join(fieldOrder, ", "))
		}
		val, err := decodeValue(name, m[name])
		if err != nil {
			return nil, fieldErr(key, "%v", err)
		}
		out = append(out, Setting{Field: name, Key: key, Value: val})
	}
	return out, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// parseAxes reads the named axes and the vary table of m.
func parseAxes(m map[string]any, path string) ([]Axis, error) {
	var axes []Axis
	for _, na := range namedAxes {
		v, ok := m[na.key]
		if !ok {
			continue
		}
		a, err := parseAxis(na.field, path+na.key, v)
		if err != nil {
			return nil, err
		}
		axes = append(axes, a)
	}
	if v, ok := m["vary"]; ok {
		vm, ok := v.(map[string]any)
		if !ok {
			return nil, fieldErr(path+"vary", "want a table of lists")
		}
		for _, name := range sortedKeys(vm) {
			key := path + "vary." + name
			if _, ok := configFields[name]; !ok {
				return nil, fieldErr(key, "unknown setting (have: %s)", strings.Join(fieldOrder, ", "))
			}
			for _, na := range namedAxes {
				if na.field == name {
					return nil, fieldErr(key, "%s has its own list: give it as %s", name, path+na.key)
				}
			}
			a, err := parseAxis(name, key, vm[name])
			if err != nil {
				return nil, err
			}
			axes = append(axes, a)
		}
	}
	return sortAxes(axes), nil
}

// sortAxes orders axes for crossing as labels list them (labelOrder): the
// named axes in namedAxes order, then the other fields, seeds last
// (innermost), so that the cells of a group (differing by seed only) are
// neighbours.
func sortAxes(axes []Axis) []Axis {
	sort.SliceStable(axes, func(i, j int) bool {
		return slices.Index(labelOrder, axes[i].Field) < slices.Index(labelOrder, axes[j].Field)
	})
	return axes
}

func parseAxis(field, key string, v any) (Axis, error) {
	list, ok := asList(v)
	if !ok {
		return Axis{}, fieldErr(key, "want a list of values")
	}
	if len(list) == 0 {
		return Axis{}, fieldErr(key, "empty list: give at least one value")
	}
	a := Axis{Field: field, Key: key}
	for i, item := range list {
		ikey := fmt.Sprintf("%s[%d]", key, i+1)
		val, err := decodeValue(field, item)
		if err != nil {
			return Axis{}, fieldErr(ikey, "%v", err)
		}
		if field == "attackers" {
			if f := val.(float64); !(f >= 0 && f <= 1) {
				return Axis{}, fieldErr(ikey, "%v is not a fraction in [0, 1]", f)
			}
		}
		if slices.ContainsFunc(a.Values, func(x any) bool { return reflect.DeepEqual(x, val) }) {
			return Axis{}, fieldErr(ikey, "%v is listed twice", val)
		}
		a.Values = append(a.Values, val)
	}
	return a, nil
}

// decodeValue converts a value of a parsed file (TOML or JSON) to the type
// of the Config field name.
func decodeValue(name string, v any) (any, error) {
	f := configFields[name]
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("want %s, got %v", kindName(f.typ), v)
	}
	p := reflect.New(f.typ)
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(p.Interface()); err != nil {
		return nil, fmt.Errorf("want %s, got %s", kindName(f.typ), b)
	}
	if name == "attackers" {
		if x := p.Elem().Float(); !(x >= 0 && x <= 1) {
			return nil, fmt.Errorf("%v is not a fraction in [0, 1]", x)
		}
	}
	return p.Elem().Interface(), nil
}

// ParseValue converts the text of a command-line value to the type of the
// Config field name: a string field takes the text as it is.
func ParseValue(name, text string) (any, error) {
	f, ok := configFields[name]
	if !ok {
		return nil, fmt.Errorf("unknown setting %q (have: %s)", name, strings.Join(fieldOrder, ", "))
	}
	if f.typ.Kind() == reflect.String {
		return reflect.ValueOf(text).Convert(f.typ).Interface(), nil
	}
	var v any
	d := json.NewDecoder(strings.NewReader(text))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("want %s, got %q", kindName(f.typ), text)
	}
	return decodeValue(name, v)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// RoundMetrics are the per-round metrics a sweep can plot.
var RoundMetrics = []string{"accuracy", "loss", "bytes_up", "bytes_down", "accepted", "sim_ms"}

func parsePlot(v any) (PlotSpec, error) {
	p := PlotSpec{Band: "sd", Metrics: []string{"accuracy", "loss"}}
	if v == nil {
		return p, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return p, fieldErr("plot", "want a table")
	}
	if err := checkKeys(m, "plot.", []string{"lines", "band", "metrics"}); err != nil {
		return p, err
	}
	if l, ok := m["lines"]; ok {
		s, ok := l.(string)
		if _, known := configFields[s]; !ok || !known {
			return p, fieldErr("plot.lines", "want the JSON name of a setting (have: %s)", strings.Join(fieldOrder, ", "))
		}
		p.Lines = s
	}
	if b, ok := m["band"]; ok {
		if s, _ := b.(string); s == "sd" || s == "ci95" {
			p.Band = s
		} else {
			return p, fieldErr("plot.band", "want \"sd\" or \"ci95\"")
		}
	}
	if ms, ok := m["metrics"]; ok {
		list, ok := asList(ms)
		if !ok || len(list) == 0 {
			return p, fieldErr("plot.metrics", "want a non-empty list (have: %s)", strings.Join(RoundMetrics, ", "))
		}
		p.Metrics = nil
		for i, x := range list {
			s, _ := x.(string)
			if !slices.Contains(RoundMetrics, s) {
				return p, fieldErr(fmt.Sprintf("plot.metrics[%d]", i+1), "unknown metric %v (have: %s)", x, strings.Join(RoundMetrics, ", "))
			}
			p.Metrics = append(p.Metrics, s)
		}
	}
	return p, nil
}

func parseTable(v any) (TableSpec, error) {
	var t TableSpec
	if v == nil {
		return t, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return t, fieldErr("table", "want a table")
	}
	if err := checkKeys(m, "table.", []string{"rows", "columns", "metric"}); err != nil {
		return t, err
	}
	fields := func(key string) ([]string, error) {
		list, ok := asList(m[key])
		if !ok || len(list) == 0 {
			return nil, fieldErr("table."+key, "want a non-empty list of setting names")
		}
		var out []string
		for i, x := range list {
			s, _ := x.(string)
			if _, ok := configFields[s]; !ok {
				return nil, fieldErr(fmt.Sprintf("table.%s[%d]", key, i+1), "unknown setting %v (have: %s)", x, strings.Join(fieldOrder, ", "))
			}
			out = append(out, s)
		}
		return out, nil
	}
	var err error
	if t.Rows, err = fields("rows"); err != nil {
		return t, err
	}
	if t.Columns, err = fields("columns"); err != nil {
		return t, err
	}
	t.Metric = "final_accuracy"
	if x, ok := m["metric"]; ok {
		s, _ := x.(string)
		if !slices.ContainsFunc(Metrics, func(m Metric) bool { return m.Name == s }) {
			names := make([]string, len(Metrics))
			for i, m := range Metrics {
				names[i] = m.Name
			}
			return t, fieldErr("table.metric", "unknown metric %v (have: %s)", x, strings.Join(names, ", "))
		}
		t.Metric = s
	}
	return t, nil
}

// Set gives field one value in every grid, or, with several values, makes
// it an axis of every grid: the command line's --set, which replaces what
// the file says about the field.
func (s *Spec) Set(field string, values []any) error {
	if _, ok := configFields[field]; !ok {
		return fmt.Errorf("unknown setting %q (have: %s)", field, strings.Join(fieldOrder, ", "))
	}
	if len(values) == 0 {
		return errors.New("no value")
	}
	key := "--set " + field
	for i := range s.Grids {
		g := &s.Grids[i]
		g.Base = slices.DeleteFunc(g.Base, func(b Setting) bool { return b.Field == field })
		g.Axes = slices.DeleteFunc(g.Axes, func(a Axis) bool { return a.Field == field })
		if len(values) == 1 {
			g.Base = append(g.Base, Setting{Field: field, Key: key, Value: values[0]})
		} else {
			g.Axes = sortAxes(append(g.Axes, Axis{Field: field, Key: key, Values: slices.Clone(values)}))
		}
	}
	return nil
}

// formatValue prints a setting's value for labels and tables.
func formatValue(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return x
	}
	return fmt.Sprint(v)
}
