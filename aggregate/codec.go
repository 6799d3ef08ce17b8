package aggregate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"

	"github.com/fedrank/fedrank/rankvote"
)

// The byte formats of models and updates. Every format starts with a
// 4-byte magic and states its shape, so a decoder can reject a payload of the
// wrong kind or shape with a precise error before it looks at the values.
//
//	FRL model   "FRLM" | seed u64 | L u8 | L × (in u32, out u32) | L × packed ranking
//	FRL update  "FRLU" | L u8 | L × n u32 | L × packed ranking
//	FRL update, delta-coded  "FRLD" | L u8 | L × n u32 | L × delta-coded ranking
//	FRL update, bucket-coded "FRLB" | L u8 | L × n u32 | L × bucket-coded ranking
//	dense model "DNSM" | seed u64 | L u8 | L × (in u32, out u32) | float32 weights
//	dense update "DNSU" | L u8 | L × n u32 | float32 weights
//
// Integers and floats are little-endian. A packed ranking holds a layer's
// edge indices in ascending order of score at ceil(log2 n) bits each
// (rankvote.Pack). A delta-coded ranking is coded against the same layer's
// ranking in the global model the peer trained from (rankvote.DeltaCoder):
// lossless, and far smaller when the peer moved little; only a receiver
// that holds that model can decode it.

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed payload")

const maxLayers = 64

var (
	magicFRLModel    = [4]byte{'F', 'R', 'L', 'M'}
	magicFRLUpdate   = [4]byte{'F', 'R', 'L', 'U'}
	magicFRLDelta    = [4]byte{'F', 'R', 'L', 'D'}
	magicFRLBucket   = [4]byte{'F', 'R', 'L', 'B'}
	magicDenseModel  = [4]byte{'D', 'N', 'S', 'M'}
	magicDenseUpdate = [4]byte{'D', 'N', 'S', 'U'}
)

// Spec identifies a network: its layer sizes and the seed of its frozen or
// initial weights. Peers of one federation share it.
type Spec struct {
	Seed  uint64
	Sizes []int // neurons per layer, input first: 784,300,100,10
	// Shapes, when set, gives each layer's (in, out) for a network whose
	// weight layers are not a chain of Sizes (a convolution's kernel tensor
	// is in = k·k·in_channels by out = out_channels); Sizes is then unused.
	// The formats are the same: the header states each layer's in and out.
	Shapes [][2]int
}

// shapes returns each layer's (in, out).
func (s Spec) shapes() [][2]int {
	if s.Shapes != nil {
		return s.Shapes
	}
	if len(s.Sizes) < 2 {
		return nil
	}
	out := make([][2]int, len(s.Sizes)-1)
	for l := range out {
		out[l] = [2]int{s.Sizes[l], s.Sizes[l+1]}
	}
	return out
}

// Layers returns the number of edges of each layer.
func (s Spec) Layers() []int {
	sh := s.shapes()
	out := make([]int, len(sh))
	for l, v := range sh {
		out[l] = v[0] * v[1]
	}
	return out
}

// Validate checks the spec's shape.
func (s Spec) Validate() error {
	if s.Shapes != nil {
		if len(s.Shapes) < 1 || len(s.Shapes) > maxLayers {
			return fmt.Errorf("aggregate: spec needs 1..%d layer shapes, got %d", maxLayers, len(s.Shapes))
		}
		for l, v := range s.Shapes {
			if v[0] <= 0 || v[0] > 1<<24 || v[1] <= 0 || v[1] > 1<<24 {
				return fmt.Errorf("aggregate: spec layer %d is %dx%d, want 1..%d each", l, v[0], v[1], 1<<24)
			}
		}
	} else {
		if len(s.Sizes) < 2 || len(s.Sizes)-1 > maxLayers {
			return fmt.Errorf("aggregate: spec needs 2..%d sizes, got %d", maxLayers+1, len(s.Sizes))
		}
		for i, n := range s.Sizes {
			if n <= 0 || n > 1<<24 {
				return fmt.Errorf("aggregate: spec size %d is %d, want 1..%d", i, n, 1<<24)
			}
		}
	}
	for l, n := range s.Layers() {
		if n > math.MaxInt32 {
			return fmt.Errorf("aggregate: layer %d has %d edges, more than a ranking can index", l, n)
		}
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func (s Spec) appendHeader(dst []byte, magic [4]byte) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, s.Seed)
	sh := s.shapes()
	dst = append(dst, byte(len(sh)))
	for _, v := range sh {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(v[0]))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(v[1]))
	}
	return dst
}

// checkHeader verifies a model header against the spec and returns the rest.
func (s Spec) checkHeader(src []byte, magic [4]byte, what string) ([]byte, error) {
	sh := s.shapes()
	L := len(sh)
	need := 4 + 8 + 1 + 8*L
	if len(src) < need {
		return nil, malformed("%s of %d bytes is shorter than its %d-byte header", what, len(src), need)
	}
	if [4]byte(src[:4]) != magic {
		return nil, malformed("%s has magic %q, want %q", what, src[:4], magic[:])
	}
	if seed := binary.LittleEndian.Uint64(src[4:]); seed != s.Seed {
		return nil, malformed("%s is of network seed %d, want %d", what, seed, s.Seed)
	}
	if got := int(src[12]); got != L {
		return nil, malformed("%s has %d layers, want %d", what, got, L)
	}
	p := src[13:]
	for l := 0; l < L; l++ {
		in, out := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
		if int(in) != sh[l][0] || int(out) != sh[l][1] {
			return nil, malformed("%s layer %d is %dx%d, want %dx%d", what, l, in, out, sh[l][0], sh[l][1])
		}
		p = p[8:]
	}
	return p, nil
}

func appendUpdateHeader(dst []byte, magic [4]byte, layers []int) []byte {
	dst = append(dst, magic[:]...)
	dst = append(dst, byte(len(layers)))
	for _, n := range layers {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	}
	return dst
}

func checkUpdateHeader(src []byte, magic [4]byte, layers []int) ([]byte, error) {
	need := 4 + 1 + 4*len(layers)
	if len(src) < need {
		return nil, malformed("update of %d bytes is shorter than its %d-byte header", len(src), need)
	}
	if [4]byte(src[:4]) != magic {
		return nil, malformed("update has magic %q, want %q", src[:4], magic[:])
	}
	if got := int(src[4]); got != len(layers) {
		return nil, malformed("update has %d layers, want %d", got, len(layers))
	}
	p := src[5:]
	for l, n := range layers {
		if got := binary.LittleEndian.Uint32(p); int(got) != n {
			return nil, malformed("update layer %d has %d entries, want %d", l, got, n)
		}
		p = p[4:]
	}
	return p, nil
}

// EncodeFRLModel encodes a global FRL model: per layer, the global ranking.
func (s Spec) EncodeFRLModel(order [][]uint32) []byte {
	layers := s.Layers()
	size := 13 + 8*len(layers)
	for _, n := range layers {
		size += rankvote.PackedSize(n)
	}
	dst := s.appendHeader(make([]byte, 0, size), magicFRLModel)
	for l, n := range layers {
		dst = rankvote.Pack(dst, order[l], n)
	}
	return dst
}

// DecodeFRLModel decodes and validates a global FRL model into dst (reused
// when the shapes fit). Every layer must be a permutation.
func (s Spec) DecodeFRLModel(src []byte, dst [][]uint32) ([][]uint32, error) {
	p, err := s.checkHeader(src, magicFRLModel, "FRL model")
	if err != nil {
		return nil, err
	}
	return decodeRankings(p, s.Layers(), dst, "FRL model", true)
}

// EncodeFRLUpdate encodes a peer's rankings (per layer, edge indices by
// ascending score).
func (s Spec) EncodeFRLUpdate(dst []byte, order [][]uint32) []byte {
	layers := s.Layers()
	dst = appendUpdateHeader(dst, magicFRLUpdate, layers)
	for l, n := range layers {
		dst = rankvote.Pack(dst, order[l], n)
	}
	return dst
}

// DecodeFRLUpdate decodes and validates a packed FRL update into dst. A
// delta-coded update needs its reference: DecodeFRLUpdateAgainst.
func (s Spec) DecodeFRLUpdate(src []byte, dst [][]uint32) ([][]uint32, error) {
	return s.decodeFRLUpdate(src, dst, true)
}

// EncodeFRLDeltaUpdate encodes a peer's rankings delta-coded against ref,
// the rankings of the global model it trained from. c may be nil.
func (s Spec) EncodeFRLDeltaUpdate(dst []byte, order, ref [][]uint32, c *rankvote.DeltaCoder) []byte {
	if c == nil {
		c = new(rankvote.DeltaCoder)
	}
	layers := s.Layers()
	dst = appendUpdateHeader(dst, magicFRLDelta, layers)
	for l := range layers {
		dst = c.Encode(dst, order[l], ref[l])
	}
	return dst
}

// DecodeFRLUpdateAgainst decodes and validates an FRL update, packed or
// delta-coded against ref (the round's global rankings), into dst. c may
// be nil.
func (s Spec) DecodeFRLUpdateAgainst(src []byte, dst, ref [][]uint32, c *rankvote.DeltaCoder) ([][]uint32, error) {
	return s.decodeFRLUpdateAgainst(src, dst, ref, c, nil, nil, true)
}

// IsFRLDeltaUpdate tells whether src claims to be a delta-coded FRL update.
func IsFRLDeltaUpdate(src []byte) bool { return formatOf(src) == FormatDelta }

// EncodeFRLBucketUpdate encodes a peer's rankings lossily: per layer, the
// bucket of every edge under bounds[l] (rankvote.BucketCoder), in the
// context of its bucket in ref, the global rankings it trained from. c may
// be nil.
func (s Spec) EncodeFRLBucketUpdate(dst []byte, order, ref, bounds [][]uint32, c *rankvote.BucketCoder) []byte {
	if c == nil {
		c = new(rankvote.BucketCoder)
	}
	layers := s.Layers()
	dst = appendUpdateHeader(dst, magicFRLBucket, layers)
	for l := range layers {
		dst = c.Encode(dst, order[l], ref[l], bounds[l])
	}
	return dst
}

// decodeCodedLayers decodes an update whose layers are coded against ref
// (the round's global rankings) by layer, which decodes one layer from the
// front of its bytes and returns the rest.
func (s Spec) decodeCodedLayers(src []byte, magic [4]byte, what string, dst, ref [][]uint32,
	layer func(l int, dst []uint32, p []byte) ([]uint32, []byte, error)) ([][]uint32, error) {
	layers := s.Layers()
	p, err := checkUpdateHeader(src, magic, layers)
	if err != nil {
		return nil, err
	}
	if len(ref) != len(layers) {
		return nil, malformed("a %s FRL update needs the global model it was coded against", what)
	}
	if len(dst) != len(layers) {
		dst = make([][]uint32, len(layers))
	}
	for l := range layers {
		r, rest, err := layer(l, dst[l], p)
		if err != nil {
			return nil, fmt.Errorf("%w: FRL update layer %d: %w", ErrMalformed, l, err)
		}
		dst[l], p = r, rest
	}
	if len(p) != 0 {
		return nil, malformed("FRL update has %d bytes after its last layer", len(p))
	}
	return dst, nil
}

// isCodedFRLUpdate tells whether src claims to be an FRL update coded
// against the global model (delta- or bucket-coded).
func isCodedFRLUpdate(src []byte) bool {
	f := formatOf(src)
	return f == FormatDelta || f == FormatBucket
}

// decodeFRLUpdateAgainst decodes a packed, delta- or bucket-coded update;
// c and bc (either may be nil) are reused for the coded ones.
//
// bounds, when not nil, is the federation's bucket layout of every layer: a
// bucket-coded update of another layout is malformed.
func (s Spec) decodeFRLUpdateAgainst(src []byte, dst, ref [][]uint32, c *rankvote.DeltaCoder, bc *rankvote.BucketCoder, bounds [][]uint32, permCheck bool) ([][]uint32, error) {
	switch formatOf(src) {
	case FormatBucket:
		// Each bucket's edges are ordered by a pseudo-random draw seeded
		// by the payload's FNV-1a hash: independent between voters, the
		// same wherever it is decoded.
		h := fnv.New64a()
		h.Write(src)
		seed := h.Sum64()
		if bc == nil {
			bc = new(rankvote.BucketCoder)
		}
		return s.decodeCodedLayers(src, magicFRLBucket, "bucket-coded", dst, ref, func(l int, dst []uint32, p []byte) ([]uint32, []byte, error) {
			r, lay, rest, err := bc.Decode(dst, p, ref[l], seed+uint64(l))
			if err == nil && bounds != nil && !slices.Equal(lay, bounds[l]) {
				err = fmt.Errorf("a %d-bucket layout, not the federation's", len(lay)-1)
				if len(lay) == len(bounds[l]) {
					err = fmt.Errorf("a %d-bucket layout with other bounds than the federation's", len(lay)-1)
				}
			}
			return r, rest, err
		})
	case FormatDelta:
		if c == nil {
			c = new(rankvote.DeltaCoder)
		}
		return s.decodeCodedLayers(src, magicFRLDelta, "delta-coded", dst, ref, func(l int, dst []uint32, p []byte) ([]uint32, []byte, error) {
			return c.Decode(dst, p, ref[l])
		})
	}
	return s.decodeFRLUpdate(src, dst, permCheck)
}

// decodeFRLUpdate skips the permutation check when permCheck is false, for
// callers that check while they consume (rankvote.Vote.Add does).
func (s Spec) decodeFRLUpdate(src []byte, dst [][]uint32, permCheck bool) ([][]uint32, error) {
	p, err := checkUpdateHeader(src, magicFRLUpdate, s.Layers())
	if err != nil {
		return nil, err
	}
	return decodeRankings(p, s.Layers(), dst, "FRL update", permCheck)
}

// FRLUpdateSize is the encoded size of an FRL update for this spec.
func (s Spec) FRLUpdateSize() int {
	layers := s.Layers()
	n := 5 + 4*len(layers)
	for _, e := range layers {
		n += rankvote.PackedSize(e)
	}
	return n
}

func decodeRankings(p []byte, layers []int, dst [][]uint32, what string, permCheck bool) ([][]uint32, error) {
	want := 0
	for _, n := range layers {
		want += rankvote.PackedSize(n)
	}
	if len(p) != want {
		return nil, malformed("%s rankings take %d bytes, want %d", what, len(p), want)
	}
	if len(dst) != len(layers) {
		dst = make([][]uint32, len(layers))
	}
	for l, n := range layers {
		size := rankvote.PackedSize(n)
		r, err := rankvote.Unpack(p[:size], n, dst[l])
		if err != nil {
			return nil, fmt.Errorf("%w: %s layer %d: %w", ErrMalformed, what, l, err)
		}
		if permCheck {
			if err := rankvote.Validate(r, n); err != nil {
				return nil, fmt.Errorf("%w: %s layer %d: %w", ErrMalformed, what, l, err)
			}
		}
		dst[l] = r
		p = p[size:]
	}
	return dst, nil
}

// EncodeDenseModel encodes dense weights (per layer, input-major).
func (s Spec) EncodeDenseModel(w [][]float32) []byte {
	dst := s.appendHeader(make([]byte, 0, 13+8*len(w)+4*totalLen(w)), magicDenseModel)
	return appendFloats(dst, w)
}

// DecodeDenseModel decodes dense weights into dst; values must be finite.
func (s Spec) DecodeDenseModel(src []byte, dst [][]float32) ([][]float32, error) {
	p, err := s.checkHeader(src, magicDenseModel, "dense model")
	if err != nil {
		return nil, err
	}
	return decodeFloats(p, s.Layers(), dst, "dense model")
}

// EncodeDenseUpdate encodes a peer's dense weights.
func (s Spec) EncodeDenseUpdate(dst []byte, w [][]float32) []byte {
	dst = appendUpdateHeader(dst, magicDenseUpdate, s.Layers())
	return appendFloats(dst, w)
}

// DecodeDenseUpdate decodes a dense update into dst; values must be finite.
func (s Spec) DecodeDenseUpdate(src []byte, dst [][]float32) ([][]float32, error) {
	p, err := checkUpdateHeader(src, magicDenseUpdate, s.Layers())
	if err != nil {
		return nil, err
	}
	return decodeFloats(p, s.Layers(), dst, "dense update")
}

func totalLen[T any](x [][]T) int {
	n := 0
	for _, v := range x {
		n += len(v)
	}
	return n
}

func appendFloats(dst []byte, w [][]float32) []byte {
	for _, layer := range w {
		for _, v := range layer {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	}
	return dst
}

func decodeFloats(p []byte, layers []int, dst [][]float32, what string) ([][]float32, error) {
	want := 0
	for _, n := range layers {
		want += 4 * n
	}
	if len(p) != want {
		return nil, malformed("%s weights take %d bytes, want %d", what, len(p), want)
	}
	if len(dst) != len(layers) {
		dst = make([][]float32, len(layers))
	}
	for l, n := range layers {
		if len(dst[l]) != n {
			dst[l] = make([]float32, n)
		}
		d := dst[l]
		for i := range d {
			v := math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, malformed("%s layer %d weight %d is %v", what, l, i, v)
			}
			d[i] = v
		}
		p = p[4*n:]
	}
	return dst, nil
}

// cloneSizes guards a spec against later changes by the caller.
func (s Spec) clone() Spec {
	return Spec{Seed: s.Seed, Sizes: slices.Clone(s.Sizes), Shapes: slices.Clone(s.Shapes)}
}

// updateDecoder decodes a ranking aggregator's updates: packed ones as they
// are, coded ones against the round's global model, whose rankings it
// decodes once per round and only when a coded update arrives.
type updateDecoder struct {
	spec   Spec
	global []byte     // the round's global model
	ref    [][]uint32 // its rankings, when refOK
	refOK  bool
	ranks  [][]uint32 // decode buffer
	delta  rankvote.DeltaCoder
	bucket rankvote.BucketCoder
	pre    *Predecoder // nil until asked for
	taken  [][]uint32  // the rankings last taken from pre, to give back
	// format is the one update format the federation uses (0: any), and
	// bounds its bucket layouts (FormatBucket).
	format RankingFormat
	bounds [][]uint32
}

// RankingFormat names a format of FRL updates on the wire.
type RankingFormat byte

// The formats of FRL updates.
const (
	FormatAny    RankingFormat = iota // no requirement
	FormatPacked                      // EncodeFRLUpdate
	FormatDelta                       // EncodeFRLDeltaUpdate
	FormatBucket                      // EncodeFRLBucketUpdate
)

func (f RankingFormat) String() string {
	switch f {
	case FormatPacked:
		return "packed"
	case FormatDelta:
		return "delta-coded"
	case FormatBucket:
		return "bucket-coded"
	}
	return "any"
}

// formatOf is the format src claims by its magic (FormatAny: none of them).
func formatOf(src []byte) RankingFormat {
	if len(src) < 4 {
		return FormatAny
	}
	switch [4]byte(src[:4]) {
	case magicFRLUpdate:
		return FormatPacked
	case magicFRLDelta:
		return FormatDelta
	case magicFRLBucket:
		return FormatBucket
	}
	return FormatAny
}

// RankingFormatter is implemented by the ranking aggregators.
// RequireRankingFormat makes them reject, as malformed, every update in
// another format than f, and bucket-coded updates whose layout of some
// layer is not bounds[l]. A federation fixes one format in its genesis;
// an update in another, finer one (say packed rankings in a bucket-mask:16
// federation) would carry more say than the honest peers' quantized
// rankings. Call it before the first Begin.
type RankingFormatter interface {
	RequireRankingFormat(f RankingFormat, bounds [][]uint32)
}

func (d *updateDecoder) requireFormat(f RankingFormat, bounds [][]uint32) {
	d.format, d.bounds = f, nil
	if f == FormatBucket {
		d.bounds = bounds
	}
	if d.pre != nil {
		d.pre.bounds = d.bounds
	}
}

// predecoder returns d's Predecoder, made on the first call.
func (d *updateDecoder) predecoder() *Predecoder {
	if d.pre == nil {
		d.pre = newPredecoder(d.spec)
		d.pre.bounds = d.bounds
	}
	return d.pre
}

// begin starts a round on the global model, which must be an FRL model of
// the spec.
func (d *updateDecoder) begin(global []byte) error {
	if _, err := d.spec.checkHeader(global, magicFRLModel, "FRL model"); err != nil {
		return err
	}
	d.global, d.refOK = append(d.global[:0], global...), false
	return nil
}

// decode decodes an update's rankings into the decode buffer, without the
// permutation check of packed rankings (the votes check while they count).
func (d *updateDecoder) decode(payload []byte) ([][]uint32, error) {
	if d.taken != nil {
		d.pre.recycle(d.taken)
		d.taken = nil
	}
	if got := formatOf(payload); d.format != FormatAny && got != d.format && got != FormatAny {
		return nil, malformed("a %s FRL update; this federation's updates are %s", got, d.format)
	}
	var ref [][]uint32
	if isCodedFRLUpdate(payload) {
		if d.pre != nil {
			if ranks := d.pre.take(d.global, payload); ranks != nil {
				d.taken = ranks
				return ranks, nil
			}
		}
		if !d.refOK {
			r, err := d.spec.DecodeFRLModel(d.global, d.ref)
			if err != nil {
				return nil, fmt.Errorf("the round's global model: %w", err)
			}
			d.ref, d.refOK = r, true
		}
		ref = d.ref
	}
	ranks, err := d.spec.decodeFRLUpdateAgainst(payload, d.ranks, ref, &d.delta, &d.bucket, d.bounds, false)
	if err != nil {
		return nil, err
	}
	d.ranks = ranks
	return ranks, nil
}
