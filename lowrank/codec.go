package lowrank

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Codec is how factor values travel: one of FP32, FP16 or Int8.
type Codec uint8

const (
	// FP32 is IEEE-754 binary32: exact.
	FP32 Codec = 1
	// FP16 is IEEE-754 binary16, rounded to nearest even: relative error at
	// most 2⁻¹¹ for |v| ≥ 2⁻¹⁴, absolute error at most 2⁻²⁵ below; values
	// beyond ±65504 cannot be encoded.
	FP16 Codec = 2
	// Int8 is symmetric 8-bit quantization with one float32 scale per row
	// (per adapter component): q = round(v/s) in [-127, 127] with
	// s = max|row|/127, so the error is at most s/2 = max|row|/254.
	Int8 Codec = 3
)

// ParseCodec parses "fp32", "fp16" or "int8".
func ParseCodec(s string) (Codec, error) {
	switch s {
	case "fp32":
		return FP32, nil
	case "fp16":
		return FP16, nil
	case "int8":
		return Int8, nil
	}
	return 0, fmt.Errorf("lowrank: unknown compression %q (have: fp32, fp16, int8)", s)
}

func (c Codec) String() string {
	switch c {
	case FP32:
		return "fp32"
	case FP16:
		return "fp16"
	case Int8:
		return "int8"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

func (c Codec) valid() bool { return c == FP32 || c == FP16 || c == Int8 }

// BlockSize is the encoded size of a rows×cols matrix.
func (c Codec) BlockSize(rows, cols int) int {
	switch c {
	case FP32:
		return 4 * rows * cols
	case FP16:
		return 2 * rows * cols
	case Int8:
		return rows * (4 + cols)
	}
	return 0
}

// appendBlock encodes a rows×cols row-major matrix.
func (c Codec) appendBlock(dst []byte, v []float32, rows, cols int) ([]byte, error) {
	v = v[:rows*cols]
	for k, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("lowrank: value %d is %v", k, x)
		}
	}
	switch c {
	case FP32:
		for _, x := range v {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
		}
	case FP16:
		for k, x := range v {
			h, ok := f32ToF16(x)
			if !ok {
				return nil, fmt.Errorf("lowrank: value %d (%v) exceeds the fp16 range ±65504", k, x)
			}
			dst = binary.LittleEndian.AppendUint16(dst, h)
		}
	case Int8:
		for r := range rows {
			row := v[r*cols : (r+1)*cols]
			var m float32
			for _, x := range row {
				m = max(m, abs32(x))
			}
			s := m / 127
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(s))
			inv := 0.0
			if s > 0 {
				inv = 1 / float64(s)
			}
			for _, x := range row {
				q := math.RoundToEven(float64(x) * inv)
				q = max(-127, min(127, q)) // |x|/s may round a hair past 127
				dst = append(dst, byte(int8(q)))
			}
		}
	default:
		return nil, fmt.Errorf("lowrank: unknown codec %d", uint8(c))
	}
	return dst, nil
}

// decodeBlock decodes a rows×cols matrix from the front of src into dst and
// returns the rest of src. It rejects NaN and ±Inf, int8 values of -128, and
// int8 rows whose scale is negative, not finite, or zero under non-zero values.
func (c Codec) decodeBlock(src []byte, dst []float32, rows, cols int, what string) ([]byte, error) {
	n := c.BlockSize(rows, cols)
	if len(src) < n {
		return nil, malformed("%s: %d bytes left, a %d×%d %s block needs %d", what, len(src), rows, cols, c, n)
	}
	dst = dst[:rows*cols]
	switch c {
	case FP32:
		for k := range dst {
			x := math.Float32frombits(binary.LittleEndian.Uint32(src[4*k:]))
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, malformed("%s: value %d is %v", what, k, x)
			}
			dst[k] = x
		}
	case FP16:
		for k := range dst {
			h := binary.LittleEndian.Uint16(src[2*k:])
			if h&0x7c00 == 0x7c00 {
				return nil, malformed("%s: value %d is fp16 NaN or Inf (%#04x)", what, k, h)
			}
			dst[k] = f16ToF32(h)
		}
	case Int8:
		p := src
		for r := range rows {
			s := math.Float32frombits(binary.LittleEndian.Uint32(p))
			if !(s >= 0) || math.IsInf(float64(s), 0) {
				return nil, malformed("%s: row %d has scale %v", what, r, s)
			}
			q := p[4 : 4+cols]
			row := dst[r*cols : (r+1)*cols]
			for k, b := range q {
				v := int8(b)
				if v == -128 {
					return nil, malformed("%s: row %d value %d is -128, outside the symmetric range", what, r, k)
				}
				if s == 0 && v != 0 {
					return nil, malformed("%s: row %d has scale 0 but value %d is %d", what, r, k, v)
				}
				row[k] = float32(v) * s
			}
			p = p[4+cols:]
		}
	default:
		return nil, malformed("%s: unknown codec %d", what, uint8(c))
	}
	return src[n:], nil
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// f32ToF16 rounds a finite float32 to binary16, to nearest even; ok is false
// when the result would overflow to infinity.
func f32ToF16(f float32) (uint16, bool) {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127
	mant := b & 0x7fffff
	switch {
	case exp == 128: // Inf or NaN: the caller rejects them first
		return sign | 0x7c00, false
	case exp > 15:
		return sign | 0x7c00, false
	case exp >= -14: // normal half
		h := uint32(exp+15)<<10 | mant>>13
		rest := mant & 0x1fff
		if rest > 0x1000 || rest == 0x1000 && h&1 == 1 {
			h++ // may carry into the exponent, which is right; 0x7c00 is overflow
		}
		if h >= 0x7c00 {
			return sign | 0x7c00, false
		}
		return sign | uint16(h), true
	case exp >= -25: // subnormal half (or rounds up to the smallest normal)
		m := mant | 0x800000    // implicit bit
		shift := uint(-exp - 1) // 14..24: to mant·2^(exp+1) in units of 2⁻²⁴
		h := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || rest == half && h&1 == 1 {
			h++
		}
		return sign | uint16(h), true
	default:
		return sign, true // rounds to ±0
	}
}

// f16ToF32 widens a finite binary16 exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := int(h >> 10 & 0x1f)
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant·2⁻²⁴
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | uint32(exp-15+127)<<23 | mant<<13)
}
