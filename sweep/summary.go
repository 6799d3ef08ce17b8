package sweep

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
)

// Output files of a sweep, in its directory.
const (
	SummaryCSV = "summary.csv"
	RunsCSV    = "runs.csv"
	SummaryMD  = "summary.md"
	PlotsDir   = "plots"
)

// Group is the cells of a sweep that differ by seed only.
type Group struct {
	Key     string        // GroupHash of its configs
	Config  simnet.Config // its first cell's
	Results []*Result
	// Stats are the Metrics over the cells that finished, by metric name.
	Stats map[string]Stat
}

// Seeds are the seeds of the group's finished cells.
func (g *Group) Seeds() []uint64 {
	var out []uint64
	for _, r := range g.Results {
		if r.Report != nil {
			out = append(out, r.Config.Seed)
		}
	}
	return out
}

// Failed counts the group's cells that failed or did not run.
func (g *Group) Failed() int {
	n := 0
	for _, r := range g.Results {
		if r.Report == nil {
			n++
		}
	}
	return n
}

// Summary is a sweep's results grouped by seed.
type Summary struct {
	Spec    *Spec
	Results []Result
	Groups  []*Group
	// Fields name the groups: scenario, aggregator and every other setting
	// the sweep sets (seed aside) that differs between cells, in label
	// order. Settings derived from others (aggregator_params) or left to
	// the scenarios' defaults do not name groups.
	Fields []string
	// Varying are those of Fields that do differ between groups.
	Varying []string
	// explicit are the fields the sweep sets in some cell.
	explicit []string
}

// notLabels never name a group: seed tells the cells of a group apart, and
// the rest never changes results.
var notLabels = []string{"seed", "workers", "data_dir"}

// Summarize groups results by seed and computes each group's statistics.
func Summarize(spec *Spec, results []Result) *Summary {
	s := &Summary{Spec: spec, Results: results}
	byKey := map[string]*Group{}
	for i := range results {
		r := &results[i]
		g, ok := byKey[r.Group]
		if !ok {
			g = &Group{Key: r.Group, Config: r.Config}
			byKey[r.Group] = g
			s.Groups = append(s.Groups, g)
		}
		g.Results = append(g.Results, r)
	}
	for _, g := range s.Groups {
		g.Stats = map[string]Stat{}
		for _, m := range Metrics {
			var xs []float64
			for _, r := range g.Results {
				if r.Report != nil {
					xs = append(xs, m.Of(r.Report))
				}
			}
			g.Stats[m.Name] = Describe(xs)
		}
	}
	for _, r := range results {
		for _, f := range r.Explicit {
			if !slices.Contains(s.explicit, f) {
				s.explicit = append(s.explicit, f)
			}
		}
	}
	for _, f := range labelOrder {
		if slices.Contains(notLabels, f) {
			continue
		}
		varies := false
		for _, r := range results[min(1, len(results)):] {
			if !equalValue(fieldValue(r.Config, f), fieldValue(results[0].Config, f)) {
				varies = true
				break
			}
		}
		if varies && slices.Contains(s.explicit, f) {
			s.Varying = append(s.Varying, f)
		}
		if slices.Contains(s.Varying, f) || f == "scenario" || f == "aggregator" {
			s.Fields = append(s.Fields, f)
		}
	}
	return s
}

// Common lists the settings the sweep sets and every cell shares, as
// "field=value", zero values and the fields that never change results
// aside. (Each cell's cache file has its every setting.)
func (s *Summary) Common() []string {
	if len(s.Results) == 0 {
		return nil
	}
	c := s.Results[0].Config
	var out []string
	for _, f := range fieldOrder {
		if slices.Contains(s.Fields, f) || slices.Contains(notLabels, f) || !slices.Contains(s.explicit, f) {
			continue
		}
		if slices.ContainsFunc(s.Results, func(r Result) bool { return !equalValue(fieldValue(r.Config, f), fieldValue(c, f)) }) {
			continue
		}
		v := fieldValue(c, f)
		if reflectZero(v) {
			continue
		}
		out = append(out, f+"="+formatValue(v))
	}
	return out
}

func reflectZero(v any) bool {
	switch x := v.(type) {
	case string:
		return x == ""
	case float64:
		return x == 0
	case int:
		return x == 0
	case int64:
		return x == 0
	case uint64:
		return x == 0
	case bool:
		return !x
	}
	return false
}

func ff(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return ""
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// WriteRunsCSV writes one row per cell.
func (s *Summary) WriteRunsCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	header := []string{"cell", "grid", "group", "hash", "status"}
	header = append(header, s.Fields...)
	header = append(header, "seed", "rounds")
	for _, m := range Metrics {
		header = append(header, m.Name)
	}
	header = append(header, "bytes_up_total", "bytes_down_total", "workers", "model_hash", "error")
	if err := cw.Write(header); err != nil {
		return err
	}
	groupIndex := map[string]int{}
	for i, g := range s.Groups {
		groupIndex[g.Key] = i + 1
	}
	for _, r := range s.Results {
		row := []string{strconv.Itoa(r.Index + 1), r.Grid, strconv.Itoa(groupIndex[r.Group]), r.Hash, string(r.Status)}
		for _, f := range s.Fields {
			row = append(row, formatValue(fieldValue(r.Config, f)))
		}
		row = append(row, strconv.FormatUint(r.Config.Seed, 10))
		if rep := r.Report; rep != nil {
			row = append(row, strconv.Itoa(len(rep.Rounds)))
			for _, m := range Metrics {
				row = append(row, ff(m.Of(rep)))
			}
			workers := ""
			if cfg, err := configOf(rep); err == nil {
				workers = strconv.Itoa(cfg.Workers)
			}
			row = append(row, strconv.FormatInt(rep.BytesUpTotal, 10), strconv.FormatInt(rep.BytesDownTotal, 10), workers, rep.Model.Hash, "")
		} else {
			row = append(row, "")
			for range Metrics {
				row = append(row, "")
			}
			msg := ""
			if r.Err != nil {
				msg = r.Err.Error()
			}
			row = append(row, "", "", "", "", msg)
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteSummaryCSV writes one row per group: for each metric its mean,
// standard deviation and 95% interval over the group's seeds.
func (s *Summary) WriteSummaryCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	header := []string{"group"}
	header = append(header, s.Fields...)
	header = append(header, "runs", "failed", "seeds")
	for _, m := range Metrics {
		header = append(header, m.Name+"_mean", m.Name+"_sd", m.Name+"_ci95_lo", m.Name+"_ci95_hi")
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	for i, g := range s.Groups {
		row := []string{strconv.Itoa(i + 1)}
		for _, f := range s.Fields {
			row = append(row, formatValue(fieldValue(g.Config, f)))
		}
		var seeds []string
		for _, sd := range g.Seeds() {
			seeds = append(seeds, strconv.FormatUint(sd, 10))
		}
		row = append(row, strconv.Itoa(len(seeds)), strconv.Itoa(g.Failed()), strings.Join(seeds, " "))
		for _, m := range Metrics {
			st := g.Stats[m.Name]
			row = append(row, ff(st.Mean), ff(st.SD), ff(st.Lo), ff(st.Hi))
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// cellText is a Markdown cell of a metric: "0.9123 ± 0.0040" (mean ± half
// the 95% interval), the mean alone for one seed, "-" for none.
func cellText(m Metric, st Stat) string {
	if st.N == 0 || math.IsNaN(st.Mean) {
		return "-"
	}
	s := fmt.Sprintf(m.Format, st.Mean*m.Scale)
	if hw := st.HalfWidth(); !math.IsNaN(hw) {
		s += " ± " + fmt.Sprintf(m.Format, hw*m.Scale)
	}
	return s
}

// WriteSummaryMD writes the summary as Markdown: a line on the settings,
// a table of every group and, if the sweep file asks, the pivot table.
func (s *Summary) WriteSummaryMD(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## Sweep %s\n\n", s.Spec.Name)
	if d := strings.TrimSpace(s.Spec.Description); d != "" {
		b.WriteString(d + "\n\n")
	}
	seeds := map[uint64]bool{}
	for _, r := range s.Results {
		seeds[r.Config.Seed] = true
	}
	fmt.Fprintf(&b, "%d runs in %d groups over %d seeds. Each figure is the mean over a group's seeds ± half "+
		"its Student-t 95%% interval (summary.csv has the standard deviations and the bounds). "+
		"Wall seconds depend on how many runs shared the cores.", len(s.Results), len(s.Groups), len(seeds))
	if c := s.Common(); len(c) > 0 {
		fmt.Fprintf(&b, " Every run: %s.", strings.Join(c, ", "))
	}
	b.WriteString("\n\n|")
	for _, f := range s.Fields {
		b.WriteString(" " + f + " |")
	}
	b.WriteString(" seeds |")
	for _, m := range Metrics {
		b.WriteString(" " + m.Title + " |")
	}
	b.WriteString("\n|" + strings.Repeat("---|", len(s.Fields)) + strings.Repeat("---:|", 1+len(Metrics)) + "\n")
	for _, g := range s.Groups {
		b.WriteString("|")
		for _, f := range s.Fields {
			v := displayValue(f, g.Config)
			if v == "" {
				v = "-"
			}
			b.WriteString(" " + v + " |")
		}
		n := fmt.Sprint(len(g.Seeds()))
		if f := g.Failed(); f > 0 {
			n += fmt.Sprintf(" (%d failed)", f)
		}
		b.WriteString(" " + n + " |")
		for _, m := range Metrics {
			b.WriteString(" " + cellText(m, g.Stats[m.Name]) + " |")
		}
		b.WriteString("\n")
	}
	if len(s.Spec.Table.Rows) > 0 {
		b.WriteString("\n")
		s.writePivot(&b)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WritePivot writes the sweep file's pivot table alone (nothing without one).
func (s *Summary) WritePivot(w io.Writer) error {
	if len(s.Spec.Table.Rows) == 0 {
		return nil
	}
	var b strings.Builder
	s.writePivot(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (s *Summary) writePivot(b *strings.Builder) {
	t := s.Spec.Table
	var metric Metric
	for _, m := range Metrics {
		if m.Name == t.Metric {
			metric = m
		}
	}
	type key struct{ row, col string }
	var rows, cols []string
	rowCfg := map[string]simnet.Config{}
	cells := map[key]*Group{}
	for _, g := range s.Groups {
		r, c := Label(g.Config, t.Rows, "\x00"), Label(g.Config, t.Columns, " ")
		if !slices.Contains(rows, r) {
			rows = append(rows, r)
			rowCfg[r] = g.Config
		}
		if !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
		cells[key{r, c}] = g
	}
	fmt.Fprintf(b, "%s by %s (mean ± half the 95%% interval; \"-\": not run):\n\n|", metric.Title, strings.Join(t.Columns, " and "))
	for _, f := range t.Rows {
		b.WriteString(" " + f + " |")
	}
	for _, c := range cols {
		b.WriteString(" " + orDash(c) + " |")
	}
	b.WriteString("\n|" + strings.Repeat("---|", len(t.Rows)) + strings.Repeat("---:|", len(cols)) + "\n")
	for _, r := range rows {
		b.WriteString("|")
		for _, f := range t.Rows {
			b.WriteString(" " + orDash(displayValue(f, rowCfg[r])) + " |")
		}
		for _, c := range cols {
			if g, ok := cells[key{r, c}]; ok {
				b.WriteString(" " + cellText(metric, g.Stats[metric.Name]) + " |")
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteAll writes summary.csv, runs.csv, summary.md and the plots into dir,
// and returns the plots' paths.
func (s *Summary) WriteAll(dir string) ([]string, error) {
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{RunsCSV, s.WriteRunsCSV},
		{SummaryCSV, s.WriteSummaryCSV},
		{SummaryMD, s.WriteSummaryMD},
	} {
		var buf bytes.Buffer
		if err := f.write(&buf); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if err := writeAtomic(filepath.Join(dir, f.name), buf.Bytes()); err != nil {
			return nil, err
		}
	}
	return s.WritePlots(filepath.Join(dir, PlotsDir))
}

// configOf is the simnet.Config of a report.
func configOf(r *report.Report) (simnet.Config, error) {
	return report.ConfigAs[simnet.Config](r)
}
