package lowrank

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// The byte formats (little-endian), in the style of package aggregate's:
// a 4-byte magic, then the shape, so a decoder rejects a payload of the wrong
// kind or shape before it reads a value.
//
//	model  "LRAM" | version u8 | base [32] | seed u64 | flags u8 | L u8 |
//	       L × (in u32, out u32, rank u16, alpha f32) | codec u8 |
//	       L × (r u16 | [A block r×In] | B block r×Out)
//	update "LRAU" | version u8 | flags u8 | L u8 | L × (in u32, out u32, r u16) |
//	       codec u8 | L × ([ΔA block r×In] | ΔB block r×Out)
//
// flags bit 0 is FrozenA: A blocks are absent (FFA-LoRA; A is derived from the
// seed). A block is a component-major matrix in the codec's layout (see
// Codec). A model layer holds r ≤ rank components; an update layer holds
// r ≤ rank components as differences from the first r components of the
// round's global model, so int8 spends its range on what changed.

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed low-rank payload")

const (
	version   = 1
	flagFFA   = 1
	maxLayers = 64
	maxRank   = 1 << 12
	maxDim    = 1 << 24
)

var (
	magicModel  = [4]byte{'L', 'R', 'A', 'M'}
	magicUpdate = [4]byte{'L', 'R', 'A', 'U'}
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Layer is one adapted layer of a network.
type Layer struct {
	In, Out int
	Rank    int     // the federation's rank of the layer: the global adapter's
	Alpha   float32 // the scale is Alpha/Rank
}

// Spec identifies a federation's adapters: the frozen base they adapt, the
// seed of the initial (for FFA: frozen) A, and the layer shapes and ranks.
// Peers of one federation share it.
type Spec struct {
	Base    [32]byte // SHA-256 of the base model's weights
	Seed    uint64
	FrozenA bool // FFA-LoRA: only B travels
	Layers  []Layer
}

// Validate checks the spec's shape.
func (s Spec) Validate() error {
	if len(s.Layers) == 0 || len(s.Layers) > maxLayers {
		return fmt.Errorf("lowrank: spec needs 1..%d layers, got %d", maxLayers, len(s.Layers))
	}
	for l, ly := range s.Layers {
		switch {
		case ly.In <= 0 || ly.In > maxDim || ly.Out <= 0 || ly.Out > maxDim:
			return fmt.Errorf("lowrank: layer %d is %d×%d, want sides in 1..%d", l, ly.In, ly.Out, maxDim)
		case ly.Rank < 0 || ly.Rank > min(ly.In, ly.Out, maxRank):
			return fmt.Errorf("lowrank: layer %d rank %d out of range 0..%d", l, ly.Rank, min(ly.In, ly.Out, maxRank))
		case !(ly.Alpha > 0) || math.IsInf(float64(ly.Alpha), 0):
			return fmt.Errorf("lowrank: layer %d alpha %v must be > 0 and finite", l, ly.Alpha)
		}
	}
	return nil
}

func (s Spec) clone() Spec { s.Layers = slices.Clone(s.Layers); return s }

// Factors is an adapter: per layer, A (r×In) and B (r×Out), component-major
// (row j is component j; see model.LoRA). Ranks may differ per layer; A is
// nil in a FrozenA federation's models and updates.
type Factors struct {
	A, B [][]float32
}

// Rank returns the rank of layer l (from B's length).
func (f Factors) Rank(l, out int) int { return len(f.B[l]) / out }

// Prefix returns the first ranks[l] components of every layer (aliased).
func (f Factors) Prefix(s Spec, ranks []int) Factors {
	p := Factors{B: make([][]float32, len(s.Layers))}
	if f.A != nil {
		p.A = make([][]float32, len(s.Layers))
	}
	for l, ly := range s.Layers {
		r := min(ranks[l], len(f.B[l])/ly.Out)
		p.B[l] = f.B[l][:r*ly.Out]
		if f.A != nil {
			p.A[l] = f.A[l][:r*ly.In]
		}
	}
	return p
}

// check validates factors against the spec; model factors (full) must have
// exactly the layer ranks.
func (s Spec) check(f Factors, full bool) error {
	if len(f.B) != len(s.Layers) || (!s.FrozenA && len(f.A) != len(s.Layers)) || (s.FrozenA && f.A != nil) {
		return fmt.Errorf("lowrank: factors of %d A and %d B layers for a %d-layer spec (frozen A: %v)", len(f.A), len(f.B), len(s.Layers), s.FrozenA)
	}
	for l, ly := range s.Layers {
		if len(f.B[l])%ly.Out != 0 {
			return fmt.Errorf("lowrank: layer %d B has %d values, not a multiple of %d", l, len(f.B[l]), ly.Out)
		}
		r := len(f.B[l]) / ly.Out
		if r > ly.Rank || full && r != ly.Rank {
			return fmt.Errorf("lowrank: layer %d has rank %d, spec rank %d", l, r, ly.Rank)
		}
		if !s.FrozenA && len(f.A[l]) != r*ly.In {
			return fmt.Errorf("lowrank: layer %d A has %d values, want %d×%d", l, len(f.A[l]), r, ly.In)
		}
	}
	return nil
}

func (s Spec) flags() byte {
	if s.FrozenA {
		return flagFFA
	}
	return 0
}

// ModelSize is the encoded size of a full-rank model.
func (s Spec) ModelSize(c Codec) int {
	n := 4 + 1 + 32 + 8 + 1 + 1 + 14*len(s.Layers) + 1
	for _, ly := range s.Layers {
		n += 2 + c.BlockSize(ly.Rank, ly.Out)
		if !s.FrozenA {
			n += c.BlockSize(ly.Rank, ly.In)
		}
	}
	return n
}

// UpdateSize is the encoded size of an update of the given per-layer ranks.
func (s Spec) UpdateSize(c Codec, ranks []int) int {
	n := 4 + 1 + 1 + 1 + 10*len(s.Layers) + 1
	for l, ly := range s.Layers {
		n += c.BlockSize(ranks[l], ly.Out)
		if !s.FrozenA {
			n += c.BlockSize(ranks[l], ly.In)
		}
	}
	return n
}

// EncodeModel encodes a global adapter (every layer at the spec's rank).
func (s Spec) EncodeModel(f Factors, c Codec) ([]byte, error) {
	if err := s.check(f, true); err != nil {
		return nil, err
	}
	if !c.valid() {
		return nil, fmt.Errorf("lowrank: unknown codec %d", uint8(c))
	}
	dst := make([]byte, 0, s.ModelSize(c))
	dst = append(dst, magicModel[:]...)
	dst = append(dst, version)
	dst = append(dst, s.Base[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, s.Seed)
	dst = append(dst, s.flags(), byte(len(s.Layers)))
	for _, ly := range s.Layers {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(ly.In))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(ly.Out))
		dst = binary.LittleEndian.AppendUint16(dst, uint16(ly.Rank))
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(ly.Alpha))
	}
	dst = append(dst, byte(c))
	var err error
	for l, ly := range s.Layers {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(ly.Rank))
		if !s.FrozenA {
			if dst, err = c.appendBlock(dst, f.A[l], ly.Rank, ly.In); err != nil {
				return nil, fmt.Errorf("lowrank: model layer %d A: %w", l, err)
			}
		}
		if dst, err = c.appendBlock(dst, f.B[l], ly.Rank, ly.Out); err != nil {
			return nil, fmt.Errorf("lowrank: model layer %d B: %w", l, err)
		}
	}
	return dst, nil
}

// DecodeModel decodes and validates a global adapter of this spec (every
// layer at the spec's rank; the per-layer count is there so a later version
// can ship truncated models).
func (s Spec) DecodeModel(src []byte) (Factors, error) {
	L := len(s.Layers)
	need := 4 + 1 + 32 + 8 + 1 + 1 + 14*L + 1
	if len(src) < need {
		return Factors{}, malformed("model of %d bytes is shorter than its %d-byte header", len(src), need)
	}
	if [4]byte(src[:4]) != magicModel {
		return Factors{}, malformed("model has magic %q, want %q", src[:4], magicModel[:])
	}
	if src[4] != version {
		return Factors{}, malformed("model version %d, want %d", src[4], version)
	}
	if [32]byte(src[5:37]) != s.Base {
		return Factors{}, malformed("model adapts base %x, want %x", src[5:13], s.Base[:8])
	}
	if seed := binary.LittleEndian.Uint64(src[37:]); seed != s.Seed {
		return Factors{}, malformed("model has seed %d, want %d", seed, s.Seed)
	}
	if src[45] != s.flags() {
		return Factors{}, malformed("model has flags %#x, want %#x", src[45], s.flags())
	}
	if int(src[46]) != L {
		return Factors{}, malformed("model has %d layers, want %d", src[46], L)
	}
	p := src[47:]
	for l, ly := range s.Layers {
		in, out := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
		rank, alpha := binary.LittleEndian.Uint16(p[8:]), math.Float32frombits(binary.LittleEndian.Uint32(p[10:]))
		if int(in) != ly.In || int(out) != ly.Out || int(rank) != ly.Rank || alpha != ly.Alpha {
			return Factors{}, malformed("model layer %d is %d×%d rank %d alpha %v, want %d×%d rank %d alpha %v",
				l, in, out, rank, alpha, ly.In, ly.Out, ly.Rank, ly.Alpha)
		}
		p = p[14:]
	}
	c := Codec(p[0])
	if !c.valid() {
		return Factors{}, malformed("model has unknown codec %d", p[0])
	}
	p = p[1:]
	f := Factors{B: make([][]float32, L)}
	if !s.FrozenA {
		f.A = make([][]float32, L)
	}
	var err error
	for l, ly := range s.Layers {
		if len(p) < 2 {
			return Factors{}, malformed("model layer %d: truncated before its rank", l)
		}
		r := int(binary.LittleEndian.Uint16(p))
		if r != ly.Rank {
			return Factors{}, malformed("model layer %d holds %d components, rank is %d", l, r, ly.Rank)
		}
		p = p[2:]
		what := fmt.Sprintf("model layer %d", l)
		if !s.FrozenA {
			f.A[l] = make([]float32, r*ly.In)
			if p, err = c.decodeBlock(p, f.A[l], r, ly.In, what+" A"); err != nil {
				return Factors{}, err
			}
		}
		f.B[l] = make([]float32, r*ly.Out)
		if p, err = c.decodeBlock(p, f.B[l], r, ly.Out, what+" B"); err != nil {
			return Factors{}, err
		}
	}
	if len(p) != 0 {
		return Factors{}, malformed("model has %d bytes after its last layer", len(p))
	}
	return f, nil
}

// EncodeUpdate encodes a peer's trained factors as differences from start,
// the global factors it trained from (the same ranks). Every layer's rank
// must be at most the spec's.
func (s Spec) EncodeUpdate(dst []byte, c Codec, start, trained Factors) ([]byte, error) {
	if err := s.check(trained, false); err != nil {
		return nil, err
	}
	if err := s.check(start, false); err != nil {
		return nil, err
	}
	if !c.valid() {
		return nil, fmt.Errorf("lowrank: unknown codec %d", uint8(c))
	}
	dst = append(dst, magicUpdate[:]...)
	dst = append(dst, version, s.flags(), byte(len(s.Layers)))
	for l, ly := range s.Layers {
		r := len(trained.B[l]) / ly.Out
		if len(start.B[l]) != len(trained.B[l]) {
			return nil, fmt.Errorf("lowrank: layer %d trained at rank %d from a start of rank %d", l, r, len(start.B[l])/ly.Out)
		}
		dst = binary.LittleEndian.AppendUint32(dst, uint32(ly.In))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(ly.Out))
		dst = binary.LittleEndian.AppendUint16(dst, uint16(r))
	}
	dst = append(dst, byte(c))
	var diff []float32
	var err error
	for l, ly := range s.Layers {
		r := len(trained.B[l]) / ly.Out
		if !s.FrozenA {
			diff = sub(diff, trained.A[l], start.A[l])
			if dst, err = c.appendBlock(dst, diff, r, ly.In); err != nil {
				return nil, fmt.Errorf("lowrank: update layer %d A: %w", l, err)
			}
		}
		diff = sub(diff, trained.B[l], start.B[l])
		if dst, err = c.appendBlock(dst, diff, r, ly.Out); err != nil {
			return nil, fmt.Errorf("lowrank: update layer %d B: %w", l, err)
		}
	}
	return dst, nil
}

func sub(dst, a, b []float32) []float32 {
	dst = slices.Grow(dst[:0], len(a))[:len(a)]
	for i := range a {
		dst[i] = a[i] - b[i]
	}
	return dst
}

// DecodeUpdate decodes and validates an update and returns the peer's
// factors: start (the round's global factors, full rank) plus the decoded
// differences, at the update's ranks. Sums that overflow float32 are rejected.
func (s Spec) DecodeUpdate(src []byte, start Factors) (Factors, error) {
	L := len(s.Layers)
	need := 4 + 3 + 10*L + 1
	if len(src) < need {
		return Factors{}, malformed("update of %d bytes is shorter than its %d-byte header", len(src), need)
	}
	if [4]byte(src[:4]) != magicUpdate {
		return Factors{}, malformed("update has magic %q, want %q", src[:4], magicUpdate[:])
	}
	if src[4] != version {
		return Factors{}, malformed("update version %d, want %d", src[4], version)
	}
	if src[5] != s.flags() {
		return Factors{}, malformed("update has flags %#x, want %#x", src[5], s.flags())
	}
	if int(src[6]) != L {
		return Factors{}, malformed("update has %d layers, want %d", src[6], L)
	}
	p := src[7:]
	ranks := make([]int, L)
	for l, ly := range s.Layers {
		in, out, r := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:]), int(binary.LittleEndian.Uint16(p[8:]))
		if int(in) != ly.In || int(out) != ly.Out {
			return Factors{}, malformed("update layer %d is %d×%d, want %d×%d", l, in, out, ly.In, ly.Out)
		}
		if r > ly.Rank {
			return Factors{}, malformed("update layer %d has rank %d, more than the federation's %d", l, r, ly.Rank)
		}
		if r > len(start.B[l])/ly.Out {
			return Factors{}, malformed("update layer %d has rank %d, the global model %d", l, r, len(start.B[l])/ly.Out)
		}
		ranks[l] = r
		p = p[10:]
	}
	c := Codec(p[0])
	if !c.valid() {
		return Factors{}, malformed("update has unknown codec %d", p[0])
	}
	p = p[1:]
	if want := s.UpdateSize(c, ranks) - need; len(p) != want {
		return Factors{}, malformed("update of ranks %v in %s has %d bytes of factors, want %d", ranks, c, len(p), want)
	}
	f := Factors{B: make([][]float32, L)}
	if !s.FrozenA {
		f.A = make([][]float32, L)
	}
	var err error
	for l, ly := range s.Layers {
		r := ranks[l]
		what := fmt.Sprintf("update layer %d", l)
		if !s.FrozenA {
			f.A[l] = make([]float32, r*ly.In)
			if p, err = c.decodeBlock(p, f.A[l], r, ly.In, what+" A"); err != nil {
				return Factors{}, err
			}
			if err := addInto(f.A[l], start.A[l], what+" A"); err != nil {
				return Factors{}, err
			}
		}
		f.B[l] = make([]float32, r*ly.Out)
		if p, err = c.decodeBlock(p, f.B[l], r, ly.Out, what+" B"); err != nil {
			return Factors{}, err
		}
		if err := addInto(f.B[l], start.B[l], what+" B"); err != nil {
			return Factors{}, err
		}
	}
	return f, nil
}

func addInto(d, start []float32, what string) error {
	for i := range d {
		v := d[i] + start[i]
		if math.IsInf(float64(v), 0) {
			return malformed("%s: value %d overflows", what, i)
		}
		d[i] = v
	}
	return nil
}
