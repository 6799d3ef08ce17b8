package report

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"slices"
	"strings"
)

// NetworkPNGFile is the network chart WriteDir writes beside accuracy.png.
const NetworkPNGFile = "network.png"

// Size of network.png: two plots, one above the other.
const (
	NetworkChartWidth  = ChartWidth
	NetworkChartHeight = 760
)

// Colours of network.png's series.
var (
	ColorBytesUp   = Palette[0]
	ColorBytesDown = Palette[1]
	colorSelected  = color.RGBA{175, 175, 175, 255}
	ColorAccepted  = Palette[2]
	ColorRejected  = Palette[3]
	ColorDropped   = Palette[4]
	ColorLate      = Palette[5]
	ColorLost      = color.RGBA{30, 30, 30, 255}
)

// WriteNetworkPNG draws what the network carried in each round of r: bytes
// up and down (above), and the updates selected, accepted, rejected, dropped
// by a robust aggregator, late and lost (below). The rounds a fault hit are
// shaded in both.
func WriteNetworkPNG(w io.Writer, r *Report) error {
	return png.Encode(w, renderNetwork(r))
}

func renderNetwork(r *Report) *image.RGBA {
	img := newCanvas(NetworkChartWidth, NetworkChartHeight)
	drawHeader(img, r, NetworkChartWidth, "traffic and updates per round")

	n := len(r.Rounds)
	x := make([]float64, n)
	col := func(f func(RoundReport) float64) []float64 {
		out := make([]float64, n)
		for i, rr := range r.Rounds {
			out[i] = f(rr)
		}
		return out
	}
	for i, rr := range r.Rounds {
		x[i] = float64(rr.Round)
	}
	var markers []float64
	var faults []string
	for _, rr := range r.Rounds {
		if len(rr.Faults) > 0 {
			markers = append(markers, float64(rr.Round))
			for _, f := range rr.Faults {
				if !slices.Contains(faults, f) {
					faults = append(faults, f)
				}
			}
		}
	}

	// Bytes per round.
	bytes := panel{
		rect:   image.Rect(marginLeft, 90, NetworkChartWidth-marginRight, 350),
		xLabel: "round", yLabel: "bytes per round",
		markers: markers,
		empty:   "no rounds completed",
		series: []plotSeries{
			{color: ColorBytesUp, x: x, y: col(func(rr RoundReport) float64 { return float64(rr.BytesUp) })},
			{color: ColorBytesDown, x: x, y: col(func(rr RoundReport) float64 { return float64(rr.BytesDown) })},
		},
	}
	var ys []float64
	for _, s := range bytes.series {
		ys = append(ys, s.y...)
	}
	bytes.yLo, bytes.yHi, bytes.yStep = zeroBasedRange(ys)
	bytes.yTick, bytes.yLabel = byteAxis(bytes.yHi, bytes.yStep, bytes.yLabel)
	bytes.draw(img)
	legend := []legendItem{{"bytes up (trainers to aggregator)", ColorBytesUp, false}, {"bytes down (aggregator to trainers)", ColorBytesDown, false}}
	if n > 0 {
		drawLegendRow(img, legend, marginLeft, bytes.rect.Min.Y-12)
	}

	// Updates per round.
	counts := []struct {
		label string
		color color.RGBA
		f     func(RoundReport) float64
	}{
		{"selected", colorSelected, func(rr RoundReport) float64 { return float64(rr.Selected) }},
		{"accepted", ColorAccepted, func(rr RoundReport) float64 { return float64(rr.Accepted) }},
		{"rejected", ColorRejected, func(rr RoundReport) float64 { return float64(rr.Rejected) }},
		{"dropped", ColorDropped, func(rr RoundReport) float64 { return float64(rr.Dropped) }},
		{"late", ColorLate, func(rr RoundReport) float64 { return float64(rr.Late) }},
		{"lost", ColorLost, func(rr RoundReport) float64 { return float64(rr.Lost) }},
	}
	updates := panel{
		rect:   image.Rect(marginLeft, 440, NetworkChartWidth-marginRight, NetworkChartHeight-marginBottom-24),
		xLabel: "round", yLabel: "updates per round",
		markers: markers,
		empty:   "no rounds completed",
	}
	legend = legend[:0]
	ys = ys[:0]
	for _, c := range counts {
		s := plotSeries{color: c.color, x: x, y: col(c.f), halfWidth: 1}
		updates.series = append(updates.series, s)
		ys = append(ys, s.y...)
		legend = append(legend, legendItem{c.label, c.color, false})
	}
	updates.yLo, updates.yHi, updates.yStep = zeroBasedRange(ys)
	if updates.yStep < 1 { // counts are whole
		updates.yStep = 1
		updates.yHi = max(updates.yHi, 1)
	}
	updates.draw(img)
	if len(markers) > 0 {
		legend = append(legend, legendItem{"fault", colorFault, true})
	}
	if n > 0 {
		drawLegendRow(img, legend, marginLeft, updates.rect.Min.Y-12)
	}
	if len(faults) > 0 {
		note := fmt.Sprintf("faults in %d of %d rounds: %s", len(markers), n, strings.Join(faults, ", "))
		drawText(img, fit(note, NetworkChartWidth-20), NetworkChartWidth/2, NetworkChartHeight-12, colorSubtle, alignCenter)
	}
	return img
}
