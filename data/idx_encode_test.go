package data

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestEncodeIDXImagesRoundTrip(t *testing.T) {
	for _, tt := range []struct{ n, rows, cols int }{
		{3, 4, 5}, {0, 28, 28}, {1, 28, 28}, {2, 1, 1}, {1, 1, MaxIDXDim}, {1, MaxIDXDim, 1},
	} {
		pix := seq(tt.n * tt.rows * tt.cols)
		var buf bytes.Buffer
		if err := EncodeIDXImages(&buf, tt.rows, tt.cols, pix); err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		// The encoding is the test helper's, written independently.
		if want := idxImages(uint32(tt.n), uint32(tt.rows), uint32(tt.cols), pix); !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("%+v: encoded %d bytes, want %d (or different bytes)", tt, buf.Len(), len(want))
		}
		n, rows, cols, got, err := DecodeIDXImages(&buf)
		if err != nil || n != tt.n || rows != tt.rows || cols != tt.cols || !bytes.Equal(got, pix) {
			t.Errorf("%+v: decoded %d images of %dx%d, pixels equal: %v, err %v", tt, n, rows, cols, bytes.Equal(got, pix), err)
		}
	}
}

func TestEncodeIDXLabelsRoundTrip(t *testing.T) {
	for _, labels := range [][]uint8{nil, {}, {5, 0, 4, 1, 9, 2}, bytes.Repeat([]byte{9}, 70_000)} {
		var buf bytes.Buffer
		if err := EncodeIDXLabels(&buf, labels); err != nil {
			t.Fatal(err)
		}
		if want := idxLabels(uint32(len(labels)), labels); !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("%d labels: encoded %d bytes, want %d", len(labels), buf.Len(), len(want))
		}
		got, err := DecodeIDXLabels(&buf)
		if err != nil || !bytes.Equal(got, labels) {
			t.Errorf("%d labels: decoded %d, err %v", len(labels), len(got), err)
		}
	}
}

func TestEncodeIDXErrors(t *testing.T) {
	tests := []struct {
		name   string
		encode func(*bytes.Buffer) error
		want   string
	}{
		{"zero rows", func(b *bytes.Buffer) error { return EncodeIDXImages(b, 0, 28, nil) }, "0x28 images, want 1..4096"},
		{"negative cols", func(b *bytes.Buffer) error { return EncodeIDXImages(b, 28, -1, nil) }, "28x-1 images"},
		{"wide", func(b *bytes.Buffer) error { return EncodeIDXImages(b, 1, MaxIDXDim+1, seq(MaxIDXDim+1)) }, "1x4097 images"},
		{"partial image", func(b *bytes.Buffer) error { return EncodeIDXImages(b, 2, 2, seq(7)) }, "7 pixels are not a whole number of 2x2 images"},
		{"too many images", func(b *bytes.Buffer) error { return EncodeIDXImages(b, 1, 1, make([]byte, MaxIDXItems+1)) }, "10000001 images, more than the limit"},
		{"label 10", func(b *bytes.Buffer) error { return EncodeIDXLabels(b, []byte{1, 2, 10}) }, "label 10 at index 2, want 0..9"},
		{"too many labels", func(b *bytes.Buffer) error { return EncodeIDXLabels(b, make([]byte, MaxIDXItems+1)) }, "10000001 labels, more than the limit"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		err := tt.encode(&buf)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes written before the error", tt.name, buf.Len())
		}
	}
}

// failWriter fails once it has taken ok bytes.
type failWriter struct{ ok int }

var errDiskFull = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.ok {
		n := w.ok
		w.ok = 0
		return n, errDiskFull
	}
	w.ok -= len(p)
	return len(p), nil
}

func TestEncodeIDXWriterError(t *testing.T) {
	for _, ok := range []int{0, 5, 16, 20} {
		if err := EncodeIDXImages(&failWriter{ok}, 2, 2, seq(8)); !errors.Is(err, errDiskFull) {
			t.Errorf("images, failing after %d bytes: %v", ok, err)
		}
	}
	for _, ok := range []int{0, 8, 9} {
		if err := EncodeIDXLabels(&failWriter{ok}, []byte{1, 2}); !errors.Is(err, errDiskFull) {
			t.Errorf("labels, failing after %d bytes: %v", ok, err)
		}
	}
}

// FuzzIDXImagesRoundTrip checks both directions: what EncodeIDXImages
// accepts decodes back to itself, and any input DecodeIDXImages accepts
// encodes back to the same bytes.
func FuzzIDXImagesRoundTrip(f *testing.F) {
	f.Add(uint16(3), uint16(4), seq(24))
	f.Add(uint16(28), uint16(28), []byte{})
	f.Add(uint16(2), uint16(2), seq(7))
	f.Add(uint16(0), uint16(1), seq(4))
	f.Add(uint16(MaxIDXDim+1), uint16(1), seq(4))
	f.Add(uint16(1), uint16(1), idxImages(2, 3, 4, seq(24)))
	f.Add(uint16(1), uint16(1), idxImages(0, 28, 28, nil))
	f.Fuzz(func(t *testing.T, rows, cols uint16, pix []byte) {
		var buf bytes.Buffer
		err := EncodeIDXImages(&buf, int(rows), int(cols), pix)
		dim := int(rows) * int(cols)
		valid := rows >= 1 && cols >= 1 && rows <= MaxIDXDim && cols <= MaxIDXDim && len(pix)%dim == 0
		if valid != (err == nil) {
			t.Fatalf("%dx%d, %d pixels: error %v", rows, cols, len(pix), err)
		}
		if err == nil {
			n, r, c, got, err := DecodeIDXImages(bytes.NewReader(buf.Bytes()))
			if err != nil || n != len(pix)/dim || r != int(rows) || c != int(cols) || !bytes.Equal(got, pix) {
				t.Fatalf("%dx%d, %d pixels: decoded %d images of %dx%d, err %v", rows, cols, len(pix), n, r, c, err)
			}
		}

		// pix as a file.
		_, r, c, got, err := DecodeIDXImages(bytes.NewReader(pix))
		if err != nil {
			return
		}
		buf.Reset()
		if err := EncodeIDXImages(&buf, r, c, got); err != nil || !bytes.Equal(buf.Bytes(), pix) {
			t.Fatalf("re-encoding a decoded file: %v, %d bytes for %d", err, buf.Len(), len(pix))
		}
	})
}

// FuzzIDXLabelsRoundTrip is FuzzIDXImagesRoundTrip for label files.
func FuzzIDXLabelsRoundTrip(f *testing.F) {
	f.Add([]byte{5, 0, 4, 1, 9, 2})
	f.Add([]byte{})
	f.Add([]byte{1, 12, 3})
	f.Add(idxLabels(3, []byte{1, 2, 3}))
	f.Add(idxLabels(0, nil))
	f.Fuzz(func(t *testing.T, labels []byte) {
		var buf bytes.Buffer
		err := EncodeIDXLabels(&buf, labels)
		valid := true
		for _, l := range labels {
			valid = valid && l < MNISTClasses
		}
		if valid != (err == nil) {
			t.Fatalf("labels %v: error %v", labels, err)
		}
		if err == nil {
			got, err := DecodeIDXLabels(bytes.NewReader(buf.Bytes()))
			if err != nil || !bytes.Equal(got, labels) {
				t.Fatalf("labels %v: decoded %v, err %v", labels, got, err)
			}
		}

		got, err := DecodeIDXLabels(bytes.NewReader(labels))
		if err != nil {
			return
		}
		buf.Reset()
		if err := EncodeIDXLabels(&buf, got); err != nil || !bytes.Equal(buf.Bytes(), labels) {
			t.Fatalf("re-encoding a decoded file: %v, %d bytes for %d", err, buf.Len(), len(labels))
		}
	})
}
