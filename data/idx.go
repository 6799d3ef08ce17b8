package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrFormat is wrapped by every error that DecodeIDXImages and
// DecodeIDXLabels return for input that is not a well-formed IDX file
// (bad magic, absurd header, truncated or trailing data, bad label). Errors of
// the underlying reader are passed through without it.
var ErrFormat = errors.New("malformed IDX data")

// Limits of the IDX decoders. A header beyond them is rejected before any
// allocation, so a corrupt or hostile file cannot make the decoder allocate
// more than it is ready to accept.
const (
	MaxIDXItems = 10_000_000 // images or labels in one file
	MaxIDXDim   = 4096       // rows or columns of one image
	MaxIDXBytes = 1 << 30    // pixel bytes in one file (1 GiB)
)

const (
	idxImagesMagic = 0x00000803 // unsigned bytes, 3 dimensions (count, rows, cols)
	idxLabelsMagic = 0x00000801 // unsigned bytes, 1 dimension (count)

	imagesHeaderLen = 16
	labelsHeaderLen = 8

	// Payloads up to eagerBytes are allocated in one piece whatever the
	// source. Larger ones are allocated in one piece only when the source is
	// known to hold them; otherwise the buffer grows as the data arrives, so
	// that a header lying about its size costs at most about twice the bytes
	// actually present.
	eagerBytes = 1 << 20
)

// DecodeIDXImages decodes an IDX file of unsigned-byte images (magic 0x803:
// a big-endian header of magic, count, rows, cols, then the pixels, image by
// image, row by row) into one slice and requires the input to end exactly
// after the pixels. There is no per-image allocation.
//
// Counts above MaxIDXItems, dimensions of 0 or above MaxIDXDim, and payloads
// above MaxIDXBytes are rejected before allocating. When r is a *bytes.Reader,
// *bytes.Buffer or *strings.Reader, whose length is known, a payload longer
// than the remaining input is rejected before allocating too, and otherwise
// read with one bulk read. From a stream of unknown length, payloads over
// 1 MiB are read into a buffer that doubles as data arrives, so a header that
// lies about its size costs at most about twice the bytes actually present.
// Malformed input yields an error wrapping ErrFormat (and io.ErrUnexpectedEOF
// when the data is cut short).
func DecodeIDXImages(r io.Reader) (n, rows, cols int, pix []uint8, err error) {
	return decodeIDXImages(r, -1)
}

// decodeIDXImages is DecodeIDXImages with a hint: the number of bytes the
// caller expects after the header, or -1 if unknown. The hint only chooses
// between allocating the payload at once and growing it as it is read; it is
// never trusted for validation.
func decodeIDXImages(r io.Reader, hint int64) (n, rows, cols int, pix []uint8, err error) {
	var h [imagesHeaderLen]byte
	if err := readHeader(r, h[:], idxImagesMagic); err != nil {
		return 0, 0, 0, nil, err
	}
	cnt := binary.BigEndian.Uint32(h[4:])
	nr := binary.BigEndian.Uint32(h[8:])
	nc := binary.BigEndian.Uint32(h[12:])
	if cnt > MaxIDXItems {
		return 0, 0, 0, nil, fmt.Errorf("%w: header claims %d images, more than the limit of %d", ErrFormat, cnt, MaxIDXItems)
	}
	if nr == 0 || nc == 0 || nr > MaxIDXDim || nc > MaxIDXDim {
		return 0, 0, 0, nil, fmt.Errorf("%w: header claims %dx%d images, want 1..%d rows and columns", ErrFormat, nr, nc, MaxIDXDim)
	}
	total := uint64(cnt) * uint64(nr) * uint64(nc) // < 2^24 * 2^12 * 2^12: no overflow
	if total > MaxIDXBytes {
		return 0, 0, 0, nil, fmt.Errorf("%w: header claims %d images of %dx%d = %d bytes, more than the limit of %d", ErrFormat, cnt, nr, nc, total, MaxIDXBytes)
	}
	n, rows, cols = int(cnt), int(nr), int(nc)
	what := fmt.Sprintf("%d images of %dx%d", n, rows, cols)
	pix, err = readPayload(r, int(total), hint, what)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	if err := expectEOF(r, what); err != nil {
		return 0, 0, 0, nil, err
	}
	return n, rows, cols, pix, nil
}

// DecodeIDXLabels decodes an IDX file of unsigned-byte labels (magic 0x801:
// a big-endian header of magic and count, then one byte per label) and checks
// that every label is a digit class, below MNISTClasses. Like DecodeIDXImages
// it reads the labels in one bulk read, rejects counts above MaxIDXItems
// before allocating, and requires the input to end right after the labels.
func DecodeIDXLabels(r io.Reader) ([]uint8, error) {
	return decodeIDXLabels(r, -1)
}

func decodeIDXLabels(r io.Reader, hint int64) ([]uint8, error) {
	var h [labelsHeaderLen]byte
	if err := readHeader(r, h[:], idxLabelsMagic); err != nil {
		return nil, err
	}
	cnt := binary.BigEndian.Uint32(h[4:])
	if cnt > MaxIDXItems {
		return nil, fmt.Errorf("%w: header claims %d labels, more than the limit of %d", ErrFormat, cnt, MaxIDXItems)
	}
	what := fmt.Sprintf("%d labels", cnt)
	labels, err := readPayload(r, int(cnt), hint, what)
	if err != nil {
		return nil, err
	}
	if err := expectEOF(r, what); err != nil {
		return nil, err
	}
	for i, l := range labels {
		if l >= MNISTClasses {
			return nil, fmt.Errorf("%w: label %d at index %d, want 0..%d", ErrFormat, l, i, MNISTClasses-1)
		}
	}
	return labels, nil
}

// readHeader fills h from r and checks that it starts with the magic number
// want. The magic is checked as soon as it is read, so that a wrong file
// shorter than a header is reported as the wrong file, not as a short one.
func readHeader(r io.Reader, h []byte, want uint32) error {
	got, err := io.ReadFull(r, h[:4])
	if err == nil {
		if m := binary.BigEndian.Uint32(h); m != want {
			return magicError(m, want)
		}
		var more int
		more, err = io.ReadFull(r, h[4:])
		got += more
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) && got == 0:
		return fmt.Errorf("%w: empty input, want a %d-byte IDX header: %w", ErrFormat, len(h), io.ErrUnexpectedEOF)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated header: %d of %d bytes: %w", ErrFormat, got, len(h), io.ErrUnexpectedEOF)
	default:
		return fmt.Errorf("reading IDX header: %w", err)
	}
}

// magicError explains a wrong magic number, naming the likely mistake.
func magicError(got, want uint32) error {
	kind := map[uint32]string{idxImagesMagic: "an image file", idxLabelsMagic: "a label file"}
	var why string
	switch {
	case got>>16 == 0x1f8b:
		why = "the input looks gzip-compressed; decompress it first"
	case kind[got] != "":
		why = "this is " + kind[got] + ", want " + kind[want]
	case got>>8 == 0x08:
		why = fmt.Sprintf("this is an IDX unsigned-byte file with %d dimensions", got&0xff)
	case got>>16 == 0 && got>>8&0xff >= 0x08 && got>>8&0xff <= 0x0e:
		why = fmt.Sprintf("this is an IDX file of element type 0x%02x, want unsigned bytes (0x08)", got>>8&0xff)
	default:
		why = "not an IDX file"
	}
	return fmt.Errorf("%w: bad magic number 0x%08x, want 0x%08x (%s)", ErrFormat, got, want, why)
}

// readPayload reads exactly total bytes of r into a new slice, growing it as
// the data arrives unless the data is known to be there (see eagerBytes).
// what names the payload in errors.
func readPayload(r io.Reader, total int, hint int64, what string) ([]byte, error) {
	if avail, ok := remaining(r); ok {
		if avail < total {
			return nil, truncated(avail, total, what)
		}
		hint = int64(avail)
	}
	size := total
	if total > eagerBytes && hint < int64(total) {
		size = eagerBytes
	}
	buf := make([]byte, size)
	have := 0
	for {
		got, err := io.ReadFull(r, buf[have:])
		have += got
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, truncated(have, total, what)
			}
			return nil, fmt.Errorf("reading %s: %w", what, err)
		}
		if have == total {
			return buf, nil
		}
		grown := make([]byte, min(2*len(buf), total))
		copy(grown, buf)
		buf = grown
	}
}

// remaining reports how many unread bytes r holds, for the in-memory readers
// of the standard library whose Len means exactly that.
func remaining(r io.Reader) (int, bool) {
	switch r := r.(type) {
	case *bytes.Reader:
		return r.Len(), true
	case *bytes.Buffer:
		return r.Len(), true
	case *strings.Reader:
		return r.Len(), true
	}
	return 0, false
}

func truncated(have, total int, what string) error {
	return fmt.Errorf("%w: truncated data: %d of the %d bytes of %s: %w", ErrFormat, have, total, what, io.ErrUnexpectedEOF)
}

// expectEOF checks that r has nothing left. Reading to the end also makes a
// gzip reader verify its checksum.
func expectEOF(r io.Reader, what string) error {
	var b [1]byte
	for range 100 {
		got, err := r.Read(b[:])
		if got > 0 {
			return fmt.Errorf("%w: trailing data after the %s the header announces", ErrFormat, what)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading past %s: %w", what, err)
		}
	}
	return fmt.Errorf("reading past %s: %w", what, io.ErrNoProgress)
}
