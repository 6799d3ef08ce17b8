package data

import (
	"encoding/binary"
	"fmt"
	"io"
)

// EncodeIDXImages writes pix as an IDX file of unsigned-byte images, the
// exact inverse of DecodeIDXImages: the big-endian header (magic 0x803,
// count, rows, cols) and then pix as it is. The count is
// len(pix)/(rows*cols), so pix must hold whole images; it may hold none.
//
// It refuses, before writing anything, what DecodeIDXImages would reject:
// rows or cols outside 1..MaxIDXDim, more than MaxIDXItems images or more
// than MaxIDXBytes of pixels. Errors of w are returned wrapped.
func EncodeIDXImages(w io.Writer, rows, cols int, pix []uint8) error {
	if rows < 1 || cols < 1 || rows > MaxIDXDim || cols > MaxIDXDim {
		return fmt.Errorf("data: encoding IDX images: %dx%d images, want 1..%d rows and columns", rows, cols, MaxIDXDim)
	}
	dim := rows * cols
	if len(pix)%dim != 0 {
		return fmt.Errorf("data: encoding IDX images: %d pixels are not a whole number of %dx%d images", len(pix), rows, cols)
	}
	n := len(pix) / dim
	if n > MaxIDXItems {
		return fmt.Errorf("data: encoding IDX images: %d images, more than the limit of %d", n, MaxIDXItems)
	}
	if len(pix) > MaxIDXBytes {
		return fmt.Errorf("data: encoding IDX images: %d bytes of pixels, more than the limit of %d", len(pix), MaxIDXBytes)
	}
	var h [imagesHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], idxImagesMagic)
	binary.BigEndian.PutUint32(h[4:], uint32(n))
	binary.BigEndian.PutUint32(h[8:], uint32(rows))
	binary.BigEndian.PutUint32(h[12:], uint32(cols))
	if err := writeAll(w, h[:], pix); err != nil {
		return fmt.Errorf("data: writing IDX images: %w", err)
	}
	return nil
}

// EncodeIDXLabels writes labels as an IDX file of unsigned-byte labels, the
// exact inverse of DecodeIDXLabels: the big-endian header (magic 0x801,
// count) and then the labels as they are. Like the decoder it accepts only
// digit classes, below MNISTClasses, and at most MaxIDXItems labels; it
// checks them all before writing anything.
func EncodeIDXLabels(w io.Writer, labels []uint8) error {
	if len(labels) > MaxIDXItems {
		return fmt.Errorf("data: encoding IDX labels: %d labels, more than the limit of %d", len(labels), MaxIDXItems)
	}
	for i, l := range labels {
		if l >= MNISTClasses {
			return fmt.Errorf("data: encoding IDX labels: label %d at index %d, want 0..%d", l, i, MNISTClasses-1)
		}
	}
	var h [labelsHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], idxLabelsMagic)
	binary.BigEndian.PutUint32(h[4:], uint32(len(labels)))
	if err := writeAll(w, h[:], labels); err != nil {
		return fmt.Errorf("data: writing IDX labels: %w", err)
	}
	return nil
}

// writeAll writes the header and then the payload.
func writeAll(w io.Writer, header, payload []byte) error {
	if _, err := w.Write(header); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := w.Write(payload)
	return err
}
