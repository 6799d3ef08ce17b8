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
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Size of accuracy.png in pixels.
const (
	ChartWidth  = 800
	ChartHeight = 480
)

// Plot area margins.
const (
	marginLeft   = 72
	marginRight  = 24
	marginTop    = 60
	marginBottom = 52
)

var (
	colorBackground = color.RGBA{255, 255, 255, 255}
	colorText       = color.RGBA{20, 20, 20, 255}
	colorSubtle     = color.RGBA{100, 100, 100, 255}
	colorGrid       = color.RGBA{228, 228, 228, 255}
	colorAxis       = color.RGBA{90, 90, 90, 255}
	// ColorSeries is the colour of the accuracy line.
	ColorSeries = color.RGBA{31, 119, 180, 255}
)

// face is a fixed 7x13 bitmap font: plain, but readable and dependency-light.
var face = basicfont.Face7x13

// WritePNG draws the accuracy of every round as a line chart and writes it as
// a ChartWidth x ChartHeight PNG.
func WritePNG(w io.Writer, r *Report) error {
	return png.Encode(w, renderChart(r))
}

// drawHeader writes a run chart's title (scenario / aggregator: what) and
// subtitle across the top of a canvas width pixels wide.
func drawHeader(img *image.RGBA, r *Report, width int, what string) {
	agg := settingsOf(r).Aggregator
	if agg == "" {
		agg = "default aggregator"
	}
	title := fmt.Sprintf("%s / %s: %s", orDash(r.Scenario), agg, what)
	drawText(img, fit(title, width-20), width/2, 22, colorText, alignCenter)
	drawText(img, fit(subtitle(r), width-20), width/2, 42, colorSubtle, alignCenter)
}

func renderChart(r *Report) *image.RGBA {
	img := newCanvas(ChartWidth, ChartHeight)
	drawHeader(img, r, ChartWidth, "test accuracy per round")

	var pts []RoundReport
	for _, rr := range r.Rounds {
		if finite(rr.Accuracy) {
			pts = append(pts, rr)
		}
	}
	p := panel{
		rect:   image.Rect(marginLeft, marginTop, ChartWidth-marginRight, ChartHeight-marginBottom),
		xLabel: "round", yLabel: "accuracy",
		empty: "no rounds completed",
	}
	p.yLo, p.yHi, p.yStep = yRange(pts)
	s := plotSeries{color: ColorSeries}
	for _, rr := range pts {
		s.x = append(s.x, float64(rr.Round))
		s.y = append(s.y, rr.Accuracy)
	}
	p.series = []plotSeries{s}
	p.draw(img)
	if len(pts) == 0 {
		return img
	}

	last := pts[len(pts)-1]
	best := pts[0]
	for _, p := range pts {
		if p.Accuracy > best.Accuracy {
			best = p
		}
	}
	note := fmt.Sprintf("final %.4f   best %.4f (round %d)", last.Accuracy, best.Accuracy, best.Round)
	// On a white box, in case the curve runs through the corner.
	plot := p.rect
	noteW := font.MeasureString(face, note).Ceil()
	box := image.Rect(plot.Max.X-8-noteW-4, plot.Max.Y-10-face.Ascent-3, plot.Max.X-4, plot.Max.Y-4)
	draw.Draw(img, box, image.NewUniform(colorBackground), image.Point{}, draw.Src)
	drawText(img, note, plot.Max.X-8, plot.Max.Y-10, colorText, alignRight)
	return img
}

func subtitle(r *Report) string {
	c := settingsOf(r)
	parts := []string{
		fmt.Sprintf("%d peers", c.Peers),
		fmt.Sprintf("%d per round", c.PerRound),
	}
	if c.Partition != "" {
		parts = append(parts, c.Partition)
	}
	if c.Attackers > 0 {
		parts = append(parts, fmt.Sprintf("attackers %g %s", c.Attackers, c.Attack))
	}
	if c.Net != "" && c.Net != "ideal" {
		parts = append(parts, "net "+c.Net)
	}
	if c.Crash > 0 {
		parts = append(parts, fmt.Sprintf("crash %g", c.Crash))
	}
	parts = append(parts, fmt.Sprintf("seed %d", r.Seed))
	return strings.Join(parts, ", ")
}

// yRange is the accuracy axis: 0 to 1, zoomed in to the nearest tenth below
// the lowest point when every round scored 0.5 or more, so that the late,
// flat part of a learning curve stays readable.
func yRange(pts []RoundReport) (lo, hi, step float64) {
	lo, hi = 0, 1
	if len(pts) > 0 {
		minAcc, maxAcc := math.Inf(1), math.Inf(-1)
		for _, p := range pts {
			minAcc = math.Min(minAcc, p.Accuracy)
			maxAcc = math.Max(maxAcc, p.Accuracy)
		}
		if minAcc >= 0.5 && maxAcc <= 1 {
			lo = math.Floor((minAcc-0.02)*10) / 10
		}
		// An accuracy outside [0, 1] is not a probability; show it rather than clip it.
		lo = math.Min(lo, math.Floor(minAcc*10)/10)
		hi = math.Max(hi, math.Ceil(maxAcc*10)/10)
	}
	return lo, hi, niceStep(hi-lo, 10, []float64{1, 2, 5})
}

// niceStep is the smallest m*10^k (m from mantissas) that splits span into
// at most maxTicks intervals.
func niceStep(span float64, maxTicks int, mantissas []float64) float64 {
	if span <= 0 || math.IsNaN(span) || math.IsInf(span, 0) {
		return 1
	}
	scale := math.Pow(10, math.Floor(math.Log10(span/float64(maxTicks))))
	for {
		for _, m := range mantissas {
			if s := m * scale; span/s <= float64(maxTicks)+1e-9 {
				return s
			}
		}
		scale *= 10
	}
}

// coverage is an anti-aliasing mask: each pixel holds how much of it the
// shapes drawn so far cover. Overlapping shapes take the maximum, so joins
// between segments are not drawn darker.
type coverage struct{ mask *image.Alpha }

func newCoverage(r image.Rectangle) coverage { return coverage{image.NewAlpha(r)} }

// cover paints the pixels within about dist(px, py) <= 0 of a shape, given its
// signed distance function and bounding box, with a one-pixel soft edge.
func (c coverage) cover(minX, minY, maxX, maxY float32, dist func(px, py float32) float32) {
	b := c.mask.Bounds()
	x0, y0 := max(b.Min.X, int(minX)-1), max(b.Min.Y, int(minY)-1)
	x1, y1 := min(b.Max.X-1, int(maxX)+1), min(b.Max.Y-1, int(maxY)+1)
	for y := y0; y <= y1; y++ {
		for x := x0; x <= x1; x++ {
			a := 0.5 - dist(float32(x)+0.5, float32(y)+0.5)
			if a <= 0 {
				continue
			}
			v := uint8(255 * min(a, 1))
			if v > c.mask.AlphaAt(x, y).A {
				c.mask.SetAlpha(x, y, color.Alpha{v})
			}
		}
	}
}

// segment covers a line of half-width hw from (x0,y0) to (x1,y1), with round caps.
func (c coverage) segment(x0, y0, x1, y1, hw float32) {
	dx, dy := x1-x0, y1-y0
	l2 := dx*dx + dy*dy
	c.cover(min(x0, x1)-hw, min(y0, y1)-hw, max(x0, x1)+hw, max(y0, y1)+hw, func(px, py float32) float32 {
		var t float32
		if l2 > 0 {
			t = max(0, min(1, ((px-x0)*dx+(py-y0)*dy)/l2))
		}
		ex, ey := px-(x0+t*dx), py-(y0+t*dy)
		return float32(math.Sqrt(float64(ex*ex+ey*ey))) - hw
	})
}

// disc covers a filled circle.
func (c coverage) disc(cx, cy, r float32) {
	c.cover(cx-r, cy-r, cx+r, cy+r, func(px, py float32) float32 {
		return float32(math.Hypot(float64(px-cx), float64(py-cy))) - r
	})
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

type align int

const (
	alignLeft align = iota
	alignCenter
	alignRight
)

// drawText draws s with its baseline at y, placed at x as a says.
func drawText(img draw.Image, s string, x, y int, c color.Color, a align) {
	w := font.MeasureString(face, s).Ceil()
	switch a {
	case alignCenter:
		x -= w / 2
	case alignRight:
		x -= w
	}
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// drawTextUp draws s rotated a quarter turn counter-clockwise (read bottom
// to top), centred on (cx, cy).
func drawTextUp(img *image.RGBA, s string, cx, cy int, c color.Color) {
	w := font.MeasureString(face, s).Ceil()
	h := face.Height
	tmp := image.NewAlpha(image.Rect(0, 0, w, h))
	drawText(tmp, s, 0, face.Ascent, color.Opaque, alignLeft)
	x0, y0 := cx-h/2, cy+w/2
	src := image.NewUniform(c)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if tmp.AlphaAt(x, y).A == 0 {
				continue
			}
			// (x, y) in the text becomes (y, -x) on the page.
			p := image.Pt(x0+y, y0-x)
			draw.Draw(img, image.Rectangle{p, p.Add(image.Pt(1, 1))}, src, image.Point{}, draw.Over)
		}
	}
}

// fit shortens s to at most maxPx pixels wide.
func fit(s string, maxPx int) string {
	n := maxPx / face.Advance
	if len(s) <= n {
		return s
	}
	if n <= 3 {
		return s[:max(n, 0)]
	}
	return s[:n-3] + "..."
}
