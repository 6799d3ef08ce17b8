package model

import (
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// rawST builds a file from a literal header and data, as another writer might.
func rawST(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

// TestSafetensorsSpecExample reads a file laid out by hand from the format's
// description (two tensors, metadata, header padded with spaces, tensors
// listed out of data order).
func TestSafetensorsSpecExample(t *testing.T) {
	a := F32Tensor("a", []int{2, 2}, []float32{1, 2, 3, 4})
	bb := []byte{1, 0, 2, 0, 3, 0, 4, 0} // I16 1..4
	header := `{"b":{"dtype":"I16","shape":[4],"data_offsets":[16,24]},"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}   `
	st, err := ParseSafetensors(rawST(header, append(slices.Clone(a.Data), bb...)))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tensors) != 2 || st.Tensors[0].Name != "a" || st.Tensors[1].Name != "b" {
		t.Fatalf("tensors %+v", st.Tensors)
	}
	if st.Metadata["format"] != "pt" {
		t.Fatalf("metadata %v", st.Metadata)
	}
	v, err := st.Tensors[0].Float32s()
	if err != nil || !slices.Equal(v, []float32{1, 2, 3, 4}) || !slices.Equal(st.Tensors[0].Shape, []int{2, 2}) {
		t.Fatalf("a = %v %v (%v)", v, st.Tensors[0].Shape, err)
	}
	if !slices.Equal(st.Tensors[1].Data, bb) || st.Tensors[1].DType != "I16" {
		t.Fatalf("b = %+v", st.Tensors[1])
	}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	tensors := []Tensor{
		F32Tensor("w", []int{3, 2}, []float32{1, -2, 3.5, 0, 1e-30, -7}),
		{Name: "mask", DType: "U8", Shape: []int{3}, Data: []byte{1, 0, 1}},
		{Name: "scalar", DType: "F64", Shape: []int{}, Data: make([]byte, 8)},
		{Name: "empty", DType: "F32", Shape: []int{0, 4}, Data: nil},
	}
	meta := map[string]string{"seed": "1", "note": `quotes " and \ survive`}
	b, err := AppendSafetensors(nil, tensors, meta)
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(b); (8+n)%8 != 0 {
		t.Fatalf("data starts at %d, not 8-byte aligned", 8+n)
	}
	st, err := ParseSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st.Metadata, meta) {
		t.Fatalf("metadata %v, want %v", st.Metadata, meta)
	}
	for k, want := range tensors {
		got := st.Tensors[k]
		if got.Name != want.Name || got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) || !slices.Equal(got.Data, want.Data) {
			t.Fatalf("tensor %d: %+v, want %+v", k, got, want)
		}
	}
	again, _ := AppendSafetensors(nil, tensors, meta)
	if !slices.Equal(again, b) {
		t.Fatal("encoding is not deterministic")
	}
	for _, bad := range [][]Tensor{
		{{Name: "x", DType: "F32", Shape: []int{2}, Data: make([]byte, 4)}},
		{{Name: "x", DType: "Q4", Shape: []int{1}, Data: make([]byte, 1)}},
		{{Name: "__metadata__", DType: "U8", Shape: []int{1}, Data: []byte{0}}},
		{{Name: "x", DType: "U8", Shape: []int{1}, Data: []byte{0}}, {Name: "x", DType: "U8", Shape: []int{1}, Data: []byte{0}}},
	} {
		if _, err := AppendSafetensors(nil, bad, nil); err == nil {
			t.Errorf("encoded %+v", bad)
		}
	}
}

func TestSafetensorsRejects(t *testing.T) {
	f32 := func(k int) []byte { return make([]byte, 4*k) }
	huge := binary.LittleEndian.AppendUint64(nil, MaxSafetensorsHeader+1)
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "shorter than"},
		{"header too large", append(huge, make([]byte, 64)...), "exceeds the limit"},
		{"header past end", binary.LittleEndian.AppendUint64(nil, 100), "past the end"},
		{"not an object", rawST(`[1]`, nil), "start with '{'"},
		{"bad json", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]`, f32(1)), "header"},
		{"trailing junk", rawST(`{} x`, nil), "after its JSON"},
		{"unknown dtype", rawST(`{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}`, f32(1)), "unknown dtype"},
		{"unknown field", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, f32(1)), "unknown field"},
		{"negative shape", rawST(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, f32(1)), "tensor \"a\""},
		{"no shape", rawST(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, f32(1)), "no shape"},
		{"size mismatch", rawST(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, f32(1)), "takes 8 bytes"},
		{"out of range", rawST(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32(1)), "out of range"},
		{"reversed", rawST(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, f32(1)), "gap"},
		{"overlap", rawST(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32(2)), "overlaps"},
		{"gap", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32(2)), "gap"},
		{"trailing data", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32(2)), "after the last tensor"},
		{"duplicate", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32(2)), "duplicate"},
		{"metadata not strings", rawST(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
		{"offsets arity", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, f32(1)), "data offsets"},
		{"shape overflow", rawST(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, f32(1)), "too large"},
	} {
		_, err := ParseSafetensors(tc.file)
		if err == nil || !errors.Is(err, ErrSafetensors) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestDenseSafetensors(t *testing.T) {
	sizes := []int{12, 7, 3}
	d, _ := NewDense(sizes, 4)
	b, err := EncodeDenseSafetensors(sizes, d.Init, map[string]string{"digits": "0-4"})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := ParseSafetensors(b)
	if w, _ := st.Tensor("layers.0.weight"); !slices.Equal(w.Shape, []int{7, 12}) {
		t.Fatalf("layers.0.weight has shape %v, want PyTorch's [out, in] = [7, 12]", w.Shape)
	}
	gotSizes, w, meta, err := DecodeDenseSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotSizes, sizes) || meta["digits"] != "0-4" {
		t.Fatalf("sizes %v meta %v", gotSizes, meta)
	}
	for l := range w {
		if !slices.Equal(w[l], d.Init[l]) {
			t.Fatalf("layer %d differs after a round trip", l)
		}
	}
	// A chain that does not fit, and a NaN weight.
	bad, _ := AppendSafetensors(nil, []Tensor{
		F32Tensor("layers.0.weight", []int{7, 12}, make([]float32, 84)),
		F32Tensor("layers.1.weight", []int{3, 6}, make([]float32, 18)),
	}, nil)
	if _, _, _, err := DecodeDenseSafetensors(bad); err == nil || !strings.Contains(err.Error(), "inputs") {
		t.Fatalf("mismatched chain: %v", err)
	}
	nan := slices.Clone(d.Init[0])
	nan[5] = float32(math.NaN())
	bad, _ = EncodeDenseSafetensors([]int{12, 7}, [][]float32{nan}, nil)
	if _, _, _, err := DecodeDenseSafetensors(bad); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("NaN weight: %v", err)
	}
}

// FuzzParseSafetensors checks the reader never panics and that whatever it
// accepts re-encodes to a file it reads back the same.
func FuzzParseSafetensors(f *testing.F) {
	good, _ := AppendSafetensors(nil, []Tensor{
		F32Tensor("a", []int{2}, []float32{1, 2}),
		{Name: "b", DType: "I8", Shape: []int{3}, Data: []byte{1, 2, 3}},
	}, map[string]string{"k": "v"})
	f.Add(good)
	f.Add(rawST(`{}`, nil))
	f.Add(rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseSafetensors(b)
		if err != nil {
			return
		}
		again, err := AppendSafetensors(nil, st.Tensors, st.Metadata)
		if err != nil {
			t.Fatalf("accepted file does not re-encode: %v", err)
		}
		st2, err := ParseSafetensors(again)
		if err != nil {
			t.Fatalf("re-encoded file rejected: %v", err)
		}
		if len(st2.Tensors) != len(st.Tensors) {
			t.Fatal("tensor count changed")
		}
		for k := range st.Tensors {
			a, b := st.Tensors[k], st2.Tensors[k]
			if a.Name != b.Name || a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || !slices.Equal(a.Data, b.Data) {
				t.Fatalf("tensor %d changed: %+v vs %+v", k, a, b)
			}
		}
	})
}
