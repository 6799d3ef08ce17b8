package p2p

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func frame(data []byte) []byte {
	var b bytes.Buffer
	if _, err := writeMessage(&b, data); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 300, 4096, 4097, 70000} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		enc := frame(data)
		if len(enc) != uvarintLen(uint64(n))+n {
			t.Fatalf("n=%d: encoded %d bytes", n, len(enc))
		}
		// One byte at a time: the reader must not depend on read sizes.
		got, err := readMessage(iotest.OneByteReader(bytes.NewReader(enc)), 70000, nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("n=%d: got %d bytes, %v", n, len(got), err)
		}
	}
}

func TestReadMessageErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"empty input", nil, 10, ErrTruncated},
		{"prefix cut", []byte{0x80}, 10, ErrTruncated},
		{"body cut", []byte{5, 1, 2}, 10, ErrTruncated},
		{"oversized", frame(make([]byte, 11)), 10, ErrTooLarge},
		{"huge prefix", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 1 << 20, ErrTooLarge},
		{"non-minimal", []byte{0x81, 0x00, 1}, 10, ErrMalformedLength},
		{"too long", bytes.Repeat([]byte{0x80}, 12), 10, ErrMalformedLength},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readMessage(bytes.NewReader(tc.in), tc.max, func(n int) error {
				if n > tc.max {
					t.Fatalf("reserve(%d) above max %d", n, tc.max)
				}
				return nil
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	// A reader error is passed through, not taken for truncation.
	boom := errors.New("boom")
	if _, err := readMessage(iotest.ErrReader(boom), 10, nil); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	// A failed reservation aborts before allocating.
	if _, err := readMessage(bytes.NewReader(frame([]byte("abc"))), 10, func(int) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
}

func TestReadEOF(t *testing.T) {
	if err := readEOF(bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if err := readEOF(bytes.NewReader([]byte{1})); !errors.Is(err, ErrTrailingData) {
		t.Fatal(err)
	}
}

// FuzzReadMessage feeds arbitrary bytes to the stream reader: it must return
// an error or a message of at most max bytes, never panic, and never ask to
// reserve (allocate) more than max.
func FuzzReadMessage(f *testing.F) {
	const max = 1 << 10
	f.Add([]byte{})
	f.Add(frame([]byte("hello")))
	f.Add(frame(make([]byte, max)))
	f.Add(frame(make([]byte, max+1)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x80, 0x00})
	f.Add([]byte{0x05, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		reserved := -1
		msg, err := readMessage(iotest.OneByteReader(bytes.NewReader(in)), max, func(n int) error {
			if n < 0 || n > max {
				t.Fatalf("reserve(%d) outside 0..%d", n, max)
			}
			reserved = n
			return nil
		})
		if err != nil {
			if msg != nil {
				t.Fatal("message returned with an error")
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("raw io.EOF leaked: %v", err)
			}
			return
		}
		if len(msg) > max || len(msg) != reserved {
			t.Fatalf("message of %d bytes (reserved %d, max %d)", len(msg), reserved, max)
		}
		// What was accepted re-encodes to the bytes it was read from.
		if enc := frame(msg); !bytes.Equal(enc, in[:len(enc)]) {
			t.Fatalf("re-encoding %x differs from input %x", enc, in[:len(enc)])
		}
	})
}
