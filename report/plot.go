package report

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strings"

	"golang.org/x/image/font"
)

// Palette is the colour cycle of multi-series charts (matplotlib's tab10);
// its first colour is ColorSeries.
var Palette = []color.RGBA{
	{31, 119, 180, 255},  // blue
	{255, 127, 14, 255},  // orange
	{44, 160, 44, 255},   // green
	{214, 39, 40, 255},   // red
	{148, 103, 189, 255}, // purple
	{140, 86, 75, 255},   // brown
	{227, 119, 194, 255}, // pink
	{127, 127, 127, 255}, // grey
	{188, 189, 34, 255},  // olive
	{23, 190, 207, 255},  // cyan
}

// colorFault shades the rounds a fault hit.
var colorFault = color.RGBA{252, 215, 215, 255}

// Series is one line of a LineChart: Y over X, with an optional band from Lo
// to Hi (both nil, or both as long as X). Non-finite values leave a gap.
type Series struct {
	Label  string
	X, Y   []float64
	Lo, Hi []float64
}

// Y-axis formats of a LineChart.
const (
	YPlain    = ""         // numbers
	YAccuracy = "accuracy" // a fraction in [0, 1], zoomed in on high accuracy as accuracy.png is
	YBytes    = "bytes"    // decimal byte units
)

// LineChart is a chart of one or more series over rounds, each with its
// band (a standard deviation, a confidence interval), and a legend on the
// right. WriteLineChartPNG draws it.
type LineChart struct {
	Title, Subtitle string
	XLabel, YLabel  string
	YFormat         string // YPlain, YAccuracy or YBytes
	Series          []Series
	// Markers are x positions to shade, e.g. the rounds a fault hit.
	Markers []float64
}

// Size of a LineChart's PNG: the plot of accuracy.png plus a legend column.
const (
	LineChartWidth  = ChartWidth + legendWidth
	LineChartHeight = ChartHeight
	legendWidth     = 200
)

// WriteLineChartPNG draws c as a LineChartWidth x LineChartHeight PNG.
func WriteLineChartPNG(w io.Writer, c LineChart) error {
	return png.Encode(w, renderLineChart(c))
}

func renderLineChart(c LineChart) *image.RGBA {
	img := newCanvas(LineChartWidth, LineChartHeight)
	drawText(img, fit(c.Title, LineChartWidth-20), LineChartWidth/2, 22, colorText, alignCenter)
	drawText(img, fit(c.Subtitle, LineChartWidth-20), LineChartWidth/2, 42, colorSubtle, alignCenter)
	p := panel{
		rect:    image.Rect(marginLeft, marginTop, LineChartWidth-legendWidth-marginRight, LineChartHeight-marginBottom),
		xLabel:  orDefault(c.XLabel, "round"),
		yLabel:  c.YLabel,
		markers: c.Markers,
		empty:   "no data",
	}
	var legend []legendItem
	for i, s := range c.Series {
		col := Palette[i%len(Palette)]
		p.series = append(p.series, plotSeries{color: col, x: s.X, y: s.Y, lo: s.Lo, hi: s.Hi})
		legend = append(legend, legendItem{s.Label, col, false})
	}
	var ys []float64
	for _, s := range c.Series {
		ys = append(append(append(ys, s.Y...), s.Lo...), s.Hi...)
	}
	switch c.YFormat {
	case YAccuracy:
		p.yLo, p.yHi, p.yStep = accuracyRange(ys)
	default:
		p.yLo, p.yHi, p.yStep = zeroBasedRange(ys)
	}
	if c.YFormat == YBytes {
		p.yTick, p.yLabel = byteAxis(p.yHi, p.yStep, p.yLabel)
	}
	p.draw(img)
	if len(c.Markers) > 0 {
		legend = append(legend, legendItem{"fault", colorFault, true})
	}
	drawLegendColumn(img, legend, p.rect.Max.X+16, p.rect.Min.Y+4, p.rect.Max.Y)
	return img
}

func newCanvas(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(colorBackground), image.Point{}, draw.Src)
	return img
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// panel is one plot area with its axes, grid, series and markers.
type panel struct {
	rect           image.Rectangle // the plot area, inside the axes
	xLabel, yLabel string
	// The y axis: from yLo to yHi with a tick every yStep; yTick formats a
	// tick (nil: a number with as many decimals as yStep needs).
	yLo, yHi, yStep float64
	yTick           func(float64) string
	series          []plotSeries
	markers         []float64
	empty           string // written across an empty plot
}

// plotSeries is a line of a panel, drawn over its band (lo, hi; nil: none).
type plotSeries struct {
	color     color.RGBA
	x, y      []float64
	lo, hi    []float64
	noDots    bool
	halfWidth float32 // of the line; 0 = 1.25 px
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// xRange is the span of the finite points of the series: whole rounds.
func (p *panel) xRange() (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range p.series {
		for i, x := range s.x {
			if i < len(s.y) && finite(x) && finite(s.y[i]) {
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
		}
	}
	for _, x := range p.markers {
		if finite(x) {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	if lo > hi {
		return 0, 1, false
	}
	if lo == hi {
		lo, hi = math.Max(0, lo-1), hi+1
	}
	return lo, hi, true
}

func (p *panel) draw(img *image.RGBA) {
	plot := p.rect
	xLo, xHi, ok := p.xRange()
	yLo, yHi := p.yLo, p.yHi
	if !(yHi > yLo) {
		yLo, yHi, p.yStep = 0, 1, 0.1
	}
	px := func(x float64) float32 {
		return float32(plot.Min.X) + float32((x-xLo)/(xHi-xLo))*float32(plot.Dx())
	}
	py := func(y float64) float32 {
		y = math.Max(yLo, math.Min(yHi, y))
		return float32(plot.Max.Y) - float32((y-yLo)/(yHi-yLo))*float32(plot.Dy())
	}

	// Markers first, under everything: a strip as wide as most of a round.
	if len(p.markers) > 0 {
		half := max(2, int(0.35*float64(plot.Dx())/math.Max(1, xHi-xLo)))
		for _, m := range p.markers {
			if !finite(m) || m < xLo || m > xHi {
				continue
			}
			x := int(math.Round(float64(px(m))))
			r := image.Rect(max(plot.Min.X, x-half), plot.Min.Y, min(plot.Max.X, x+half+1), plot.Max.Y)
			draw.Draw(img, r, image.NewUniform(colorFault), image.Point{}, draw.Src)
		}
	}

	// Grid and tick labels.
	yTick := p.yTick
	if yTick == nil {
		format := tickFormat(p.yStep)
		yTick = func(v float64) string { return fmt.Sprintf(format, v) }
	}
	for i := 0; ; i++ {
		v := yLo + float64(i)*p.yStep
		if v > yHi+1e-9*math.Max(1, math.Abs(yHi)) {
			break
		}
		y := int(math.Round(float64(py(v))))
		hline(img, plot.Min.X, plot.Max.X, y, colorGrid)
		hline(img, plot.Min.X-5, plot.Min.X, y, colorAxis)
		drawText(img, yTick(v), plot.Min.X-8, y+4, colorText, alignRight)
	}
	xStep := math.Max(1, niceStep(xHi-xLo, 10, []float64{1, 2, 5})) // rounds are whole
	for v := math.Ceil(xLo/xStep) * xStep; v <= xHi+1e-9; v += xStep {
		x := int(math.Round(float64(px(v))))
		vline(img, x, plot.Min.Y, plot.Max.Y, colorGrid)
		vline(img, x, plot.Max.Y, plot.Max.Y+5, colorAxis)
		drawText(img, fmt.Sprintf("%.0f", v), x, plot.Max.Y+19, colorText, alignCenter)
	}
	// Frame and axis labels.
	hline(img, plot.Min.X, plot.Max.X, plot.Min.Y, colorAxis)
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, colorAxis)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, colorAxis)
	vline(img, plot.Max.X, plot.Min.Y, plot.Max.Y, colorAxis)
	drawText(img, p.xLabel, (plot.Min.X+plot.Max.X)/2, plot.Max.Y+40, colorText, alignCenter)
	drawTextUp(img, p.yLabel, 14, (plot.Min.Y+plot.Max.Y)/2, colorText)

	if !ok {
		drawText(img, p.empty, (plot.Min.X+plot.Max.X)/2, (plot.Min.Y+plot.Max.Y)/2, colorSubtle, alignCenter)
		return
	}
	// Bands, translucent, then the lines over them.
	for _, s := range p.series {
		if len(s.lo) != len(s.x) || len(s.hi) != len(s.x) {
			continue
		}
		band := newCoverage(img.Bounds())
		for i := 1; i < len(s.x); i++ {
			if !finite(s.x[i-1]) || !finite(s.x[i]) || !finite(s.lo[i-1]) || !finite(s.hi[i-1]) || !finite(s.lo[i]) || !finite(s.hi[i]) {
				continue
			}
			band.trapezoid(px(s.x[i-1]), py(s.lo[i-1]), py(s.hi[i-1]), px(s.x[i]), py(s.lo[i]), py(s.hi[i]))
		}
		draw.DrawMask(img, img.Bounds(), image.NewUniform(s.color), image.Point{}, scaleAlpha(band.mask, 0.22), image.Point{}, draw.Over)
	}
	for _, s := range p.series {
		ink := newCoverage(img.Bounds())
		hw := s.halfWidth
		if hw == 0 {
			hw = 1.25
		}
		n := min(len(s.x), len(s.y))
		pts := 0
		for i := range n {
			if finite(s.x[i]) && finite(s.y[i]) {
				pts++
			}
		}
		for i := range n {
			if !finite(s.x[i]) || !finite(s.y[i]) {
				continue
			}
			x, y := px(s.x[i]), py(s.y[i])
			if !s.noDots && pts <= 60 {
				ink.disc(x, y, 3)
			}
			if i > 0 && finite(s.x[i-1]) && finite(s.y[i-1]) {
				ink.segment(px(s.x[i-1]), py(s.y[i-1]), x, y, hw)
			}
		}
		draw.DrawMask(img, img.Bounds(), image.NewUniform(s.color), image.Point{}, ink.mask, image.Point{}, draw.Over)
	}
}

// scaleAlpha returns m with every alpha multiplied by f.
func scaleAlpha(m *image.Alpha, f float64) *image.Alpha {
	out := image.NewAlpha(m.Bounds())
	for i, a := range m.Pix {
		out.Pix[i] = uint8(float64(a) * f)
	}
	return out
}

// trapezoid covers the area between two vertical spans: at x0 from y0a to
// y0b, at x1 from y1a to y1b, linearly in between.
func (c coverage) trapezoid(x0, y0a, y0b, x1, y1a, y1b float32) {
	if x1 < x0 {
		x0, x1, y0a, y1a, y0b, y1b = x1, x0, y1a, y0a, y1b, y0b
	}
	b := c.mask.Bounds()
	for x := max(b.Min.X, int(math.Floor(float64(x0)))); x <= min(b.Max.X-1, int(math.Ceil(float64(x1)))); x++ {
		t := float32(0)
		if x1 > x0 {
			t = max(0, min(1, (float32(x)+0.5-x0)/(x1-x0)))
		}
		ya, yb := y0a+t*(y1a-y0a), y0b+t*(y1b-y0b)
		if ya > yb {
			ya, yb = yb, ya
		}
		for y := max(b.Min.Y, int(math.Floor(float64(ya)))); y <= min(b.Max.Y-1, int(math.Ceil(float64(yb)))); y++ {
			c.mask.SetAlpha(x, y, color.Alpha{255})
		}
	}
}

// tickFormat prints ticks a step apart with the decimals the step needs.
func tickFormat(step float64) string {
	if step <= 0 || !finite(step) {
		return "%.0f"
	}
	d := 0
	for ; d < 6; d++ {
		if v := step * math.Pow(10, float64(d)); math.Abs(v-math.Round(v)) < 1e-9*math.Max(1, v) {
			break
		}
	}
	return fmt.Sprintf("%%.%df", d)
}

// byteAxis labels a byte axis up to hi in one decimal unit, named in the
// axis label: ticks "0, 2, 4" and "bytes per round (MB)" rather than
// "0 B, 2.00 MB, 4.00 MB".
func byteAxis(hi, step float64, label string) (tick func(float64) string, unitLabel string) {
	unit, div := "B", 1.0
	for _, u := range []string{"KB", "MB", "GB", "TB"} {
		if hi < div*1000 {
			break
		}
		unit, div = u, div*1000
	}
	format := tickFormat(step / div)
	return func(v float64) string { return fmt.Sprintf(format, v/div) }, strings.TrimSpace(label + " (" + unit + ")")
}

// accuracyRange is yRange over bare values.
func accuracyRange(ys []float64) (lo, hi, step float64) {
	pts := make([]RoundReport, 0, len(ys))
	for _, y := range ys {
		if finite(y) {
			pts = append(pts, RoundReport{Accuracy: y})
		}
	}
	return yRange(pts)
}

// zeroBasedRange is an axis from 0 (or the lowest value, if negative) to
// a whole number of nice steps above the highest value.
func zeroBasedRange(ys []float64) (lo, hi, step float64) {
	lo, hi = 0, math.Inf(-1)
	for _, y := range ys {
		if finite(y) {
			lo, hi = math.Min(lo, y), math.Max(hi, y)
		}
	}
	if !(hi > lo) {
		hi = lo + 1
	}
	step = niceStep(hi-lo, 8, []float64{1, 2, 2.5, 5})
	lo = math.Floor(lo/step) * step
	hi = math.Ceil(hi/step-1e-9) * step
	return lo, hi, step
}

type legendItem struct {
	label  string
	color  color.RGBA
	swatch bool // a filled square rather than a line
}

// drawLegendColumn lists items top down from (x, y), as many as fit above yMax.
func drawLegendColumn(img *image.RGBA, items []legendItem, x, y, yMax int) {
	const row = 18
	maxChars := (LineChartWidth - x - 30) / face.Advance
	for i, it := range items {
		if y+(i+2)*row > yMax && i < len(items)-1 {
			drawText(img, fmt.Sprintf("... %d more", len(items)-i), x, y+i*row+10, colorSubtle, alignLeft)
			return
		}
		cy := y + i*row + 6
		drawSwatch(img, it, x, cy)
		drawText(img, fit(it.label, maxChars*face.Advance), x+26, cy+4, colorText, alignLeft)
	}
}

// drawLegendRow lists items left to right from (x, y), the baseline of their labels.
func drawLegendRow(img *image.RGBA, items []legendItem, x, y int) {
	for _, it := range items {
		drawSwatch(img, it, x, y-4)
		drawText(img, it.label, x+26, y, colorText, alignLeft)
		x += 26 + font.MeasureString(face, it.label).Ceil() + 18
	}
}

// drawSwatch draws an item's key, 20 px wide, centred vertically on cy.
func drawSwatch(img *image.RGBA, it legendItem, x, cy int) {
	if it.swatch {
		draw.Draw(img, image.Rect(x+4, cy-6, x+16, cy+6), image.NewUniform(it.color), image.Point{}, draw.Src)
		return
	}
	ink := newCoverage(img.Bounds())
	ink.segment(float32(x), float32(cy)+0.5, float32(x+20), float32(cy)+0.5, 1.5)
	draw.DrawMask(img, img.Bounds(), image.NewUniform(it.color), image.Point{}, ink.mask, image.Point{}, draw.Over)
}

// Slug turns a label into a file-name part: lower case letters, digits,
// dots and dashes.
func Slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.':
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}
