package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
)

// Safetensors files (huggingface/safetensors), the format base models are
// read from and written to:
//
//	u64 LE n | n bytes of JSON header | data
//
// The header is a JSON object mapping each tensor name to
// {"dtype": "F32", "shape": [out, in], "data_offsets": [begin, end]}, plus an
// optional "__metadata__" object of string values. Offsets are relative to
// the start of the data; the tensors cover the data exactly, without gaps or
// overlaps. Values are little-endian, row-major. The header may be padded
// with trailing spaces (writers align the data to 8 bytes).
//
// The reader is strict: it rejects a header longer than MaxSafetensorsHeader
// or the file, malformed or duplicate JSON keys, unknown dtypes, shapes whose
// byte size disagrees with the offsets, offsets out of range, overlapping or
// leaving gaps, and trailing bytes.

// ErrSafetensors is wrapped by every error of the safetensors reader.
var ErrSafetensors = errors.New("safetensors")

// MaxSafetensorsHeader is the largest header accepted (the reference
// implementation's limit).
const MaxSafetensorsHeader = 100_000_000

// safetensorsDTypes maps each dtype of the format to its size in bytes.
var safetensorsDTypes = map[string]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"F64": 8, "I64": 8, "U64": 8,
}

// Tensor is one named tensor of a safetensors file.
type Tensor struct {
	Name  string
	DType string // "F32", "F16", ...
	Shape []int
	Data  []byte // little-endian, row-major
}

// Safetensors is the content of a safetensors file.
type Safetensors struct {
	Tensors  []Tensor // in data order
	Metadata map[string]string
}

// Tensor returns the tensor called name.
func (s *Safetensors) Tensor(name string) (Tensor, bool) {
	for _, t := range s.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

func stErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSafetensors, fmt.Sprintf(format, args...))
}

type stInfo struct {
	DType       string   `json:"dtype"`
	Shape       []uint64 `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// ParseSafetensors decodes a whole safetensors file. Tensor data aliases b.
func ParseSafetensors(b []byte) (*Safetensors, error) {
	if len(b) < 8 {
		return nil, stErr("file of %d bytes is shorter than the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxSafetensorsHeader {
		return nil, stErr("header of %d bytes exceeds the limit of %d", n, MaxSafetensorsHeader)
	}
	if n > uint64(len(b)-8) {
		return nil, stErr("header of %d bytes runs past the end of a %d-byte file", n, len(b))
	}
	header, data := b[8:8+n], b[8+n:]
	if len(header) == 0 || header[0] != '{' {
		return nil, stErr("header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '{'
		return nil, stErr("header: %v", err)
	}
	st := &Safetensors{}
	type entry struct {
		name string
		info stInfo
	}
	var entries []entry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, stErr("header: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, stErr("header: key %v is not a string", tok)
		}
		if seen[name] {
			return nil, stErr("header: duplicate key %q", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if err := dec.Decode(&st.Metadata); err != nil {
				return nil, stErr("header: __metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var info stInfo
		if err := dec.Decode(&info); err != nil {
			return nil, stErr("header: tensor %q: %v", name, err)
		}
		entries = append(entries, entry{name, info})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, stErr("header: %v", err)
	}
	if rest := header[dec.InputOffset():]; len(bytes.Trim(rest, " \t\r\n")) != 0 {
		return nil, stErr("header has %d bytes after its JSON object", len(rest))
	}
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := entries[i].info.DataOffsets, entries[j].info.DataOffsets
		if len(a) != 2 || len(b) != 2 {
			return false
		}
		return a[0] < b[0] || a[0] == b[0] && a[1] < b[1]
	})
	var at uint64
	for _, e := range entries {
		size, ok := safetensorsDTypes[e.info.DType]
		if !ok {
			return nil, stErr("tensor %q has unknown dtype %q", e.name, e.info.DType)
		}
		if e.info.Shape == nil {
			return nil, stErr("tensor %q has no shape", e.name)
		}
		if len(e.info.DataOffsets) != 2 {
			return nil, stErr("tensor %q has %d data offsets, want 2", e.name, len(e.info.DataOffsets))
		}
		begin, end := e.info.DataOffsets[0], e.info.DataOffsets[1]
		if begin != at {
			if begin < at {
				return nil, stErr("tensor %q at [%d, %d) overlaps the previous tensor, which ends at %d", e.name, begin, end, at)
			}
			return nil, stErr("tensor %q starts at %d, leaving a gap after %d", e.name, begin, at)
		}
		if end < begin || end > uint64(len(data)) {
			return nil, stErr("tensor %q offsets [%d, %d) out of range of %d data bytes", e.name, begin, end, len(data))
		}
		elems := uint64(1)
		shape := make([]int, len(e.info.Shape))
		for d, v := range e.info.Shape {
			if v != 0 && elems > math.MaxInt32/v {
				return nil, stErr("tensor %q shape %v is too large", e.name, e.info.Shape)
			}
			elems *= v
			shape[d] = int(v)
		}
		if want := elems * uint64(size); end-begin != want {
			return nil, stErr("tensor %q of dtype %s and shape %v takes %d bytes, its offsets give %d", e.name, e.info.DType, e.info.Shape, want, end-begin)
		}
		st.Tensors = append(st.Tensors, Tensor{Name: e.name, DType: e.info.DType, Shape: shape, Data: data[begin:end:end]})
		at = end
	}
	if at != uint64(len(data)) {
		return nil, stErr("%d data bytes after the last tensor", uint64(len(data))-at)
	}
	return st, nil
}

// ReadSafetensors reads a safetensors file of at most maxBytes bytes from r.
func ReadSafetensors(r io.Reader, maxBytes int64) (*Safetensors, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSafetensors, err)
	}
	if int64(len(b)) > maxBytes {
		return nil, stErr("file exceeds %d bytes", maxBytes)
	}
	return ParseSafetensors(b)
}

// AppendSafetensors encodes tensors (in the given order) and metadata as a
// safetensors file appended to dst. The header is padded with spaces so the
// data starts 8-byte aligned. Names must be unique and not "__metadata__";
// each tensor's data must match its dtype and shape.
func AppendSafetensors(dst []byte, tensors []Tensor, meta map[string]string) ([]byte, error) {
	var hb strings.Builder
	hb.WriteByte('{')
	if len(meta) > 0 {
		m, err := json.Marshal(meta) // sorted keys: the bytes are a function of the content
		if err != nil {
			return nil, err
		}
		hb.WriteString(`"__metadata__":`)
		hb.Write(m)
	}
	seen := map[string]bool{}
	var at int
	for k, t := range tensors {
		if t.Name == "__metadata__" || seen[t.Name] {
			return nil, fmt.Errorf("safetensors: tensor name %q is reserved or repeated", t.Name)
		}
		seen[t.Name] = true
		size, ok := safetensorsDTypes[t.DType]
		if !ok {
			return nil, fmt.Errorf("safetensors: tensor %q has unknown dtype %q", t.Name, t.DType)
		}
		elems := 1
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: tensor %q has shape %v", t.Name, t.Shape)
			}
			elems *= d
		}
		if len(t.Data) != elems*size {
			return nil, fmt.Errorf("safetensors: tensor %q of shape %v has %d bytes, want %d", t.Name, t.Shape, len(t.Data), elems*size)
		}
		name, _ := json.Marshal(t.Name)
		shape, _ := json.Marshal(append([]int{}, t.Shape...))
		if k > 0 || len(meta) > 0 {
			hb.WriteByte(',')
		}
		fmt.Fprintf(&hb, `%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, t.DType, shape, at, at+len(t.Data))
		at += len(t.Data)
	}
	hb.WriteByte('}')
	header := hb.String()
	pad := (8 - len(header)%8) % 8
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(header)+pad))
	dst = append(dst, header...)
	dst = append(dst, bytes.Repeat([]byte{' '}, pad)...)
	for _, t := range tensors {
		dst = append(dst, t.Data...)
	}
	return dst, nil
}

// F32Tensor makes an F32 tensor of the given shape from values.
func F32Tensor(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return Tensor{Name: name, DType: "F32", Shape: slices.Clone(shape), Data: b}
}

// Float32s returns the values of an F32 tensor; NaN and ±Inf are rejected.
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType != "F32" {
		return nil, stErr("tensor %q has dtype %s, want F32", t.Name, t.DType)
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		v := math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, stErr("tensor %q value %d is %v", t.Name, i, v)
		}
		out[i] = v
	}
	return out, nil
}

// denseWeightName names layer l's weight as PyTorch names an nn.Sequential
// of Linear layers without bias.
func denseWeightName(l int) string { return fmt.Sprintf("layers.%d.weight", l) }

// EncodeDenseSafetensors writes a dense network (input-major weights) as a
// safetensors file: tensor "layers.{l}.weight" of shape [out, in] (the
// layout of PyTorch's nn.Linear.weight, so the file loads into an
// equivalent torch model), F32, with the given metadata.
func EncodeDenseSafetensors(sizes []int, w [][]float32, meta map[string]string) ([]byte, error) {
	if err := ValidateSizes(sizes); err != nil {
		return nil, err
	}
	if len(w) != len(sizes)-1 {
		return nil, fmt.Errorf("model: %d weight layers for %d sizes", len(w), len(sizes))
	}
	tensors := make([]Tensor, len(w))
	for l := range w {
		in, out := sizes[l], sizes[l+1]
		if len(w[l]) != in*out {
			return nil, fmt.Errorf("model: layer %d has %d weights, want %d", l, len(w[l]), in*out)
		}
		t := make([]float32, in*out) // [out, in]
		for i := range in {
			for o := range out {
				t[o*in+i] = w[l][i*out+o]
			}
		}
		tensors[l] = F32Tensor(denseWeightName(l), []int{out, in}, t)
	}
	return AppendSafetensors(nil, tensors, meta)
}

// DecodeDenseSafetensors reads a dense network written by
// EncodeDenseSafetensors: tensors layers.0.weight, layers.1.weight, ... of
// chained shapes [out, in], F32 and finite, and nothing else. It returns the
// layer sizes and input-major weights.
func DecodeDenseSafetensors(b []byte) (sizes []int, w [][]float32, meta map[string]string, err error) {
	st, err := ParseSafetensors(b)
	if err != nil {
		return nil, nil, nil, err
	}
	L := len(st.Tensors)
	if L == 0 {
		return nil, nil, nil, stErr("no weight tensors")
	}
	for l := range L {
		t, ok := st.Tensor(denseWeightName(l))
		if !ok {
			return nil, nil, nil, stErr("missing tensor %s (the file has %d tensors)", denseWeightName(l), L)
		}
		if len(t.Shape) != 2 || t.Shape[0] <= 0 || t.Shape[1] <= 0 {
			return nil, nil, nil, stErr("tensor %s has shape %v, want [out, in]", t.Name, t.Shape)
		}
		out, in := t.Shape[0], t.Shape[1]
		if l == 0 {
			sizes = append(sizes, in)
		} else if in != sizes[l] {
			return nil, nil, nil, stErr("tensor %s has %d inputs, the previous layer %d outputs", t.Name, in, sizes[l])
		}
		sizes = append(sizes, out)
		v, err := t.Float32s()
		if err != nil {
			return nil, nil, nil, err
		}
		layer := make([]float32, in*out)
		for o := range out {
			for i := range in {
				layer[i*out+o] = v[o*in+i]
			}
		}
		w = append(w, layer)
	}
	if err := ValidateSizes(sizes); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", ErrSafetensors, err)
	}
	return sizes, w, st.Metadata, nil
}
