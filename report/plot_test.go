package report

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// countColor counts the pixels of img exactly of colour c (alpha aside).
func countColor(img image.Image, c color.RGBA) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if uint8(r>>8) == c.R && uint8(g>>8) == c.G && uint8(bl>>8) == c.B {
				n++
			}
		}
	}
	return n
}

func decodePNG(t *testing.T, b []byte, w, h int) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got != image.Pt(w, h) {
		t.Fatalf("size %v, want %dx%d", got, w, h)
	}
	return img
}

// savePNG keeps a chart for a look when FEDRANK_PLOTS names a directory.
func savePNG(t *testing.T, name string, b []byte) {
	if dir := os.Getenv("FEDRANK_PLOTS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Log(err)
		}
	}
}

func TestNetworkPNG(t *testing.T) {
	for _, n := range []int{0, 1, 12, 200} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			r := sample(n)
			for i := range r.Rounds {
				rr := &r.Rounds[i]
				rr.Dropped, rr.Late, rr.Lost = i%3, i%2, (i+1)%4
				if i%5 == 2 {
					rr.Faults = []string{"partition"}
				}
			}
			var buf bytes.Buffer
			if err := WriteNetworkPNG(&buf, r); err != nil {
				t.Fatal(err)
			}
			savePNG(t, "network-"+strconv.Itoa(n)+".png", buf.Bytes())
			img := decodePNG(t, buf.Bytes(), NetworkChartWidth, NetworkChartHeight)
			for name, c := range map[string]color.RGBA{
				"bytes up": ColorBytesUp, "bytes down": ColorBytesDown, "accepted": ColorAccepted,
				"dropped": ColorDropped, "late": ColorLate, "lost": ColorLost, "fault": colorFault,
			} {
				got := countColor(img, c)
				switch {
				case n >= 3 && got < 10:
					t.Errorf("%s: only %d pixels of its colour", name, got)
				case n == 0 && name != "lost" && got > 0: // the text is near-black
					t.Errorf("%s: %d pixels of its colour with no rounds", name, got)
				}
			}
		})
	}
}

func TestLineChartPNG(t *testing.T) {
	var series []Series
	for k := range 3 {
		s := Series{Label: "group " + strconv.Itoa(k)}
		for i := 1; i <= 20; i++ {
			m := 0.9 - 0.7*math.Exp(-float64(i)/float64(3+k))
			s.X = append(s.X, float64(i))
			s.Y = append(s.Y, m)
			s.Lo = append(s.Lo, m-0.03)
			s.Hi = append(s.Hi, m+0.03)
		}
		series = append(series, s)
	}
	series[1].Y[5] = math.NaN() // a gap
	for _, tc := range []struct {
		name   string
		chart  LineChart
		colors int // series colours that must show
	}{
		{"accuracy", LineChart{Title: "accuracy per round", YLabel: "accuracy", YFormat: YAccuracy, Series: series}, 3},
		{"bytes", LineChart{Title: "bytes", YFormat: YBytes, Series: []Series{{Label: "up", X: []float64{1, 2, 3}, Y: []float64{1e6, 2e6, 1.5e6}}}, Markers: []float64{2}}, 1},
		{"empty", LineChart{Title: "nothing"}, 0},
		{"many", LineChart{Title: "many", Series: append(append(append(append([]Series{}, series...), series...), series...), series...)}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteLineChartPNG(&buf, tc.chart); err != nil {
				t.Fatal(err)
			}
			savePNG(t, "line-"+tc.name+".png", buf.Bytes())
			img := decodePNG(t, buf.Bytes(), LineChartWidth, LineChartHeight)
			for i := range tc.colors {
				if got := countColor(img, Palette[i]); got < 20 {
					t.Errorf("series %d: %d pixels of its colour", i, got)
				}
			}
			if tc.name == "accuracy" {
				// The bands: a light tint of the series colour between the lines.
				tinted := 0
				b := img.Bounds()
				for y := b.Min.Y; y < b.Max.Y; y++ {
					for x := b.Min.X; x < ChartWidth; x++ {
						r, g, bl, _ := img.At(x, y).RGBA()
						if r>>8 > 150 && r>>8 < 240 && bl>>8 > 200 && g>>8 > 180 {
							tinted++
						}
					}
				}
				if tinted < 500 {
					t.Errorf("only %d pixels of band tint", tinted)
				}
			}
			if tc.name == "bytes" && countColor(img, colorFault) < 100 {
				t.Error("the marker is not shaded")
			}
		})
	}
}

func TestTableFaultColumn(t *testing.T) {
	r := sample(4)
	r.Rounds[2].Faults = []string{"partition", "churn"}
	var buf bytes.Buffer
	if err := Table(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "faults") || !strings.Contains(out, "partition,churn") || !strings.Contains(out, "faults hit 1 of 4 rounds") {
		t.Errorf("no fault marker:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 10 && f[0] == "2" && f[9] != "-" {
			t.Errorf("round 2 had no fault: %q", line)
		}
	}

	// A long run shows the rounds a fault hit even where it is thinned.
	r = sample(103)
	r.Rounds[50].Faults = []string{"aggregator-crash"} // round 51
	buf.Reset()
	if err := Table(&buf, r); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(buf.String(), "\n") {
		if f := strings.Fields(line); len(f) == 10 && f[0] == "51" && f[9] == "aggregator-crash" {
			found = true
		}
	}
	if !found {
		t.Errorf("round 51 not shown with its fault:\n%s", buf.String())
	}

	// Without faults, no column.
	buf.Reset()
	if err := Table(&buf, sample(3)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "faults") {
		t.Errorf("a faults column without faults:\n%s", buf.String())
	}
}

func TestAxes(t *testing.T) {
	for _, tc := range []struct {
		ys     []float64
		lo, hi float64
	}{
		{[]float64{0, 7}, 0, 7},
		{[]float64{3, 3}, 0, 3},
		{[]float64{1.2e6, 2.9e6}, 0, 3e6},
		{[]float64{-1, 2}, -1, 2},
		{[]float64{0.3, math.NaN()}, 0, 0.3},
		{nil, 0, 1},
	} {
		lo, hi, step := zeroBasedRange(tc.ys)
		if lo != tc.lo || math.Abs(hi-tc.hi) > 1e-12 {
			t.Errorf("zeroBasedRange(%v) = %v, %v, %v; want %v, %v", tc.ys, lo, hi, step, tc.lo, tc.hi)
		}
		if n := (hi - lo) / step; n > 8.01 || n < 2 {
			t.Errorf("zeroBasedRange(%v): %v ticks", tc.ys, n)
		}
	}
	for step, want := range map[float64]string{1: "%.0f", 5e5: "%.0f", 0.1: "%.1f", 0.25: "%.2f", 2.5: "%.1f", 0.05: "%.2f", 0.001: "%.3f"} {
		if got := tickFormat(step); got != want {
			t.Errorf("tickFormat(%v) = %q, want %q", step, got, want)
		}
	}
	if got := Slug("frl-mnist / vote, reverse 20%"); got != "frl-mnist-vote-reverse-20" {
		t.Errorf("Slug: %q", got)
	}
}
