package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// idxImages encodes an IDX image file with the given header and payload.
func idxImages(n, rows, cols uint32, pix []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, idxImagesMagic)
	b = binary.BigEndian.AppendUint32(b, n)
	b = binary.BigEndian.AppendUint32(b, rows)
	b = binary.BigEndian.AppendUint32(b, cols)
	return append(b, pix...)
}

// idxLabels encodes an IDX label file with the given count and payload.
func idxLabels(n uint32, labels []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, idxLabelsMagic)
	b = binary.BigEndian.AppendUint32(b, n)
	return append(b, labels...)
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// opaque hides the concrete type of a reader, so the decoder cannot know how
// much it holds and must take the growing path.
type opaque struct{ io.Reader }

func TestDecodeIDXImages(t *testing.T) {
	pix := seq(3 * 4 * 5)
	for name, r := range map[string]io.Reader{
		"bytes":    bytes.NewReader(idxImages(3, 4, 5, pix)),
		"buffer":   bytes.NewBuffer(idxImages(3, 4, 5, pix)),
		"opaque":   opaque{bytes.NewReader(idxImages(3, 4, 5, pix))},
		"one-byte": iotest.OneByteReader(bytes.NewReader(idxImages(3, 4, 5, pix))),
	} {
		n, rows, cols, got, err := DecodeIDXImages(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n != 3 || rows != 4 || cols != 5 || !bytes.Equal(got, pix) {
			t.Errorf("%s: got %d images of %dx%d, pixels equal: %v", name, n, rows, cols, bytes.Equal(got, pix))
		}
	}

	// No images is a valid file.
	n, _, _, got, err := DecodeIDXImages(bytes.NewReader(idxImages(0, 28, 28, nil)))
	if err != nil || n != 0 || len(got) != 0 {
		t.Errorf("empty image file: n=%d, %d pixels, err %v", n, len(got), err)
	}
}

// TestDecodeIDXImagesGrowing decodes a payload bigger than eagerBytes from a
// reader of unknown length, so the buffer grows while reading.
func TestDecodeIDXImagesGrowing(t *testing.T) {
	const n, rows, cols = 3000, 28, 28 // 2.35 MB > eagerBytes
	pix := seq(n * rows * cols)
	gotN, _, _, got, err := DecodeIDXImages(opaque{bytes.NewReader(idxImages(n, rows, cols, pix))})
	if err != nil || gotN != n || !bytes.Equal(got, pix) {
		t.Fatalf("n=%d, pixels equal: %v, err %v", gotN, bytes.Equal(got, pix), err)
	}
	_, _, _, _, err = DecodeIDXImages(opaque{bytes.NewReader(idxImages(n, rows, cols, pix[:len(pix)-1]))})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "2351999 of the 2352000 bytes") {
		t.Errorf("truncated by one byte: %v", err)
	}
}

func TestDecodeIDXLabels(t *testing.T) {
	want := []byte{5, 0, 4, 1, 9, 2}
	got, err := DecodeIDXLabels(opaque{bytes.NewReader(idxLabels(6, want))})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
}

func TestDecodeIDXErrors(t *testing.T) {
	valid := idxImages(2, 2, 2, seq(8))
	gz := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0}
	tests := []struct {
		name   string
		labels bool // decode as a label file
		in     []byte
		want   string // substring of the error
		eof    bool   // the error must also wrap io.ErrUnexpectedEOF
	}{
		{"empty", false, nil, "empty input", true},
		{"short header", false, valid[:10], "truncated header: 10 of 16 bytes", true},
		{"truncated pixels", false, valid[:len(valid)-3], "truncated data: 5 of the 8 bytes of 2 images of 2x2", true},
		{"no pixels", false, valid[:16], "0 of the 8 bytes", true},
		{"trailing", false, append(valid[:len(valid):len(valid)], 0), "trailing data after the 2 images of 2x2", false},
		{"label file as images", false, idxLabels(1, []byte{1}), "bad magic number 0x00000801, want 0x00000803 (this is a label file, want an image file)", false},
		{"image file as labels", true, valid, "this is an image file, want a label file", false},
		{"gzip", false, gz, "gzip-compressed", false},
		{"idx int32", false, []byte{0, 0, 0x0c, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, "element type 0x0c", false},
		{"idx 2-D bytes", false, []byte{0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, "with 2 dimensions", false},
		{"garbage magic", false, []byte("hello, world, this is text"), "not an IDX file", false},
		{"too many images", false, idxImages(MaxIDXItems+1, 1, 1, nil), "claims 10000001 images", false},
		{"huge count", false, idxImages(0xffffffff, 28, 28, nil), "more than the limit of 10000000", false},
		{"zero rows", false, idxImages(1, 0, 28, nil), "0x28 images", false},
		{"wide", false, idxImages(1, 28, MaxIDXDim+1, nil), "28x4097 images, want 1..4096", false},
		{"too many bytes", false, idxImages(MaxIDXItems, 28, 28, nil), "more than the limit of 1073741824", false},
		{"too many labels", true, idxLabels(MaxIDXItems+1, nil), "claims 10000001 labels", false},
		{"truncated labels", true, idxLabels(5, []byte{1, 2}), "truncated data: 2 of the 5 bytes of 5 labels", true},
		{"trailing labels", true, idxLabels(1, []byte{1, 2}), "trailing data after the 1 labels", false},
		{"label 12", true, idxLabels(3, []byte{1, 12, 3}), "label 12 at index 1, want 0..9", false},
		{"label 255", true, idxLabels(1, []byte{255}), "label 255 at index 0", false},
	}
	for _, tt := range tests {
		// Both the in-memory path and the streaming path must agree.
		for _, wrap := range []func([]byte) io.Reader{
			func(b []byte) io.Reader { return bytes.NewReader(b) },
			func(b []byte) io.Reader { return opaque{bytes.NewReader(b)} },
		} {
			var err error
			if tt.labels {
				_, err = DecodeIDXLabels(wrap(tt.in))
			} else {
				_, _, _, _, err = DecodeIDXImages(wrap(tt.in))
			}
			switch {
			case err == nil:
				t.Errorf("%s: no error", tt.name)
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("%s: error %q does not mention %q", tt.name, err, tt.want)
			case !errors.Is(err, ErrFormat):
				t.Errorf("%s: error %q does not wrap ErrFormat", tt.name, err)
			case tt.eof && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Errorf("%s: error %q does not wrap io.ErrUnexpectedEOF", tt.name, err)
			}
		}
	}
}

// TestDecodeIDXReaderError checks that a failing reader's error comes through
// as itself, not as a format error.
func TestDecodeIDXReaderError(t *testing.T) {
	boom := errors.New("boom")
	in := idxImages(2, 2, 2, seq(8))
	for _, cut := range []int{0, 5, 16, 20, len(in)} {
		r := io.MultiReader(bytes.NewReader(in[:cut]), iotest.ErrReader(boom))
		_, _, _, _, err := DecodeIDXImages(r)
		if !errors.Is(err, boom) || errors.Is(err, ErrFormat) {
			t.Errorf("cut at %d: error %v, want one wrapping boom and not ErrFormat", cut, err)
		}
	}
}

// TestDecodeIDXBoundedAllocation checks that a header claiming far more data
// than follows costs no more than the data present (plus eagerBytes), and
// nothing at all when the input's length is known.
func TestDecodeIDXBoundedAllocation(t *testing.T) {
	in := idxImages(1_000_000, 32, 32, seq(100)) // claims 1 GB, holds 100 bytes
	measure := func(r io.Reader) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, _, _, _, err := DecodeIDXImages(r); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("want a truncation error, got %v", err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	if got := measure(opaque{bytes.NewReader(in)}); got > 2*eagerBytes {
		t.Errorf("streaming decoder allocated %d bytes for a 116-byte input", got)
	}
	if got := measure(bytes.NewReader(in)); got > 64<<10 {
		t.Errorf("in-memory decoder allocated %d bytes for a 116-byte input", got)
	}
}

func FuzzDecodeIDXImages(f *testing.F) {
	f.Add(idxImages(2, 3, 4, seq(24)))
	f.Add(idxImages(0, 28, 28, nil))
	f.Add(idxImages(1, 28, 28, seq(784)))
	f.Add(idxImages(2, 3, 4, seq(20)))
	f.Add(idxImages(2, 3, 4, seq(30)))
	f.Add(idxImages(MaxIDXItems, MaxIDXDim, MaxIDXDim, nil))
	f.Add(idxLabels(3, []byte{1, 2, 3}))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		n, rows, cols, pix, err := DecodeIDXImages(bytes.NewReader(in))
		_, _, _, pix2, err2 := DecodeIDXImages(opaque{bytes.NewReader(in)})
		if (err == nil) != (err2 == nil) || !bytes.Equal(pix, pix2) {
			t.Fatalf("in-memory and streaming decoders disagree: %v vs %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		if n > MaxIDXItems || rows < 1 || rows > MaxIDXDim || cols < 1 || cols > MaxIDXDim {
			t.Fatalf("accepted %d images of %dx%d", n, rows, cols)
		}
		// Success means the input is exactly this header and these pixels.
		if re := idxImages(uint32(n), uint32(rows), uint32(cols), pix); !bytes.Equal(re, in) {
			t.Fatalf("re-encoding gives %d bytes, input has %d", len(re), len(in))
		}
	})
}

func FuzzDecodeIDXLabels(f *testing.F) {
	f.Add(idxLabels(6, []byte{5, 0, 4, 1, 9, 2}))
	f.Add(idxLabels(0, nil))
	f.Add(idxLabels(3, []byte{1, 12, 3}))
	f.Add(idxLabels(3, []byte{1, 2}))
	f.Add(idxLabels(1, []byte{1, 2}))
	f.Add(idxLabels(MaxIDXItems, nil))
	f.Add(idxImages(1, 1, 1, []byte{1}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		labels, err := DecodeIDXLabels(bytes.NewReader(in))
		labels2, err2 := DecodeIDXLabels(opaque{bytes.NewReader(in)})
		if (err == nil) != (err2 == nil) || !bytes.Equal(labels, labels2) {
			t.Fatalf("in-memory and streaming decoders disagree: %v vs %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		for i, l := range labels {
			if l >= MNISTClasses {
				t.Fatalf("accepted label %d at %d", l, i)
			}
		}
		if re := idxLabels(uint32(len(labels)), labels); !bytes.Equal(re, in) {
			t.Fatalf("re-encoding gives %d bytes, input has %d", len(re), len(in))
		}
	})
}
