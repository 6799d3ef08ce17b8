package sweep

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/fedrank/fedrank/report"
)

// LinesField is the field whose values are the lines of the sweep's
// charts: the sweep file's plot.lines if it varies, else aggregator if it
// varies, else the first field that varies ("" if none does).
func (s *Summary) LinesField() string {
	if l := s.Spec.Plot.Lines; l != "" && slices.Contains(s.Varying, l) {
		return l
	}
	if slices.Contains(s.Varying, "aggregator") {
		return "aggregator"
	}
	if len(s.Varying) > 0 {
		return s.Varying[0]
	}
	return ""
}

// chartPanel is the groups drawn on one chart.
type chartPanel struct {
	label  string
	groups []*Group
}

// panels splits the groups into charts: one per combination of the varying
// fields other than the lines field.
func (s *Summary) panels() []chartPanel {
	lines := s.LinesField()
	var fields []string
	for _, f := range s.Varying {
		if f != lines {
			fields = append(fields, f)
		}
	}
	var out []chartPanel
	for _, g := range s.Groups {
		l := Label(g.Config, fields, ", ")
		i := slices.IndexFunc(out, func(p chartPanel) bool { return p.label == l })
		if i < 0 {
			out = append(out, chartPanel{label: l})
			i = len(out) - 1
		}
		out[i].groups = append(out[i].groups, g)
	}
	return out
}

// roundSeries is a group's metric over rounds: the mean over its seeds and
// the band the sweep file asks for.
func (s *Summary) roundSeries(g *Group, metric string) report.Series {
	byRound := map[uint64][]float64{}
	for _, r := range g.Results {
		if r.Report == nil {
			continue
		}
		for _, rr := range r.Report.Rounds {
			byRound[rr.Round] = append(byRound[rr.Round], roundMetric(metric, rr))
		}
	}
	rounds := make([]uint64, 0, len(byRound))
	for k := range byRound {
		rounds = append(rounds, k)
	}
	sort.Slice(rounds, func(i, j int) bool { return rounds[i] < rounds[j] })
	var ser report.Series
	for _, k := range rounds {
		st := Describe(byRound[k])
		lo, hi := st.Lo, st.Hi
		if s.Spec.Plot.Band != "ci95" {
			lo, hi = st.Mean-st.SD, st.Mean+st.SD
		}
		ser.X = append(ser.X, float64(k))
		ser.Y = append(ser.Y, st.Mean)
		ser.Lo = append(ser.Lo, lo)
		ser.Hi = append(ser.Hi, hi)
	}
	return ser
}

// WritePlots draws, for each metric of the sweep file's plot.metrics, a
// chart per panel: a line per group (the mean over its seeds) in a band
// (± one standard deviation, or the 95% interval). It returns the files:
// dir/<metric>.png for a single panel, else dir/<metric>-<panel>.png.
func (s *Summary) WritePlots(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	panels := s.panels()
	lines := s.LinesField()
	band := "band: +/-1 sd over seeds"
	if s.Spec.Plot.Band == "ci95" {
		band = "band: Student-t 95% interval of the mean"
	}
	subtitle := band
	if c := s.Common(); len(c) > 0 {
		subtitle += "; " + strings.Join(c, ", ")
	}
	var files []string
	used := map[string]bool{}
	for _, metric := range s.Spec.Plot.Metrics {
		for _, p := range panels {
			c := report.LineChart{
				Title:    fmt.Sprintf("%s per round, mean over seeds", metric),
				Subtitle: subtitle,
				XLabel:   "round",
				YLabel:   metric,
			}
			if p.label != "" {
				c.Title = fmt.Sprintf("%s per round: %s", metric, p.label)
			}
			switch metric {
			case "accuracy":
				c.YFormat = report.YAccuracy
			case "bytes_up", "bytes_down":
				c.YFormat = report.YBytes
			}
			for _, g := range p.groups {
				ser := s.roundSeries(g, metric)
				ser.Label = orDash(Label(g.Config, []string{lines}, " "))
				if lines == "" {
					ser.Label = "all runs"
				}
				ser.Label += fmt.Sprintf(" (n=%d)", len(g.Seeds()))
				c.Series = append(c.Series, ser)
			}
			name := metric
			if len(panels) > 1 {
				name += "-" + report.Slug(p.label)
			}
			for base, i := name, 2; used[name]; i++ {
				name = fmt.Sprintf("%s-%d", base, i)
			}
			used[name] = true
			var buf bytes.Buffer
			if err := report.WriteLineChartPNG(&buf, c); err != nil {
				return files, err
			}
			path := filepath.Join(dir, name+".png")
			if err := writeAtomic(path, buf.Bytes()); err != nil {
				return files, err
			}
			files = append(files, path)
		}
	}
	return files, nil
}
