package data

import (
	"slices"
	"testing"
)

// tinySet returns n images of 2x3 pixels whose pixels all equal the image
// index, labelled i % classes.
func tinySet(n, classes int) *Set {
	s := &Set{N: n, Rows: 2, Cols: 3, Classes: classes, Pixels: make([]uint8, n*6), Labels: make([]uint8, n)}
	for i := range n {
		for j := range 6 {
			s.Pixels[i*6+j] = uint8(i)
		}
		s.Labels[i] = uint8(i % classes)
	}
	return s
}

func TestSetImage(t *testing.T) {
	s := tinySet(4, 10)
	if s.Dim() != 6 {
		t.Fatalf("Dim = %d, want 6", s.Dim())
	}
	for i := range s.N {
		img := s.Image(i)
		if len(img) != 6 || cap(img) != 6 {
			t.Fatalf("Image(%d): len %d cap %d, want 6 and 6", i, len(img), cap(img))
		}
		if want := slices.Repeat([]uint8{uint8(i)}, 6); !slices.Equal(img, want) {
			t.Fatalf("Image(%d) = %v, want %v", i, img, want)
		}
	}
	// A view, not a copy.
	s.Image(2)[0] = 99
	if s.Pixels[12] != 99 {
		t.Error("Image does not return a view into Pixels")
	}
	// Appending to a view must not clobber the next image.
	_ = append(s.Image(1), 77)
	if s.Pixels[12] != 99 {
		t.Error("appending to Image(1) overwrote Image(2)")
	}
	for _, i := range []int{-1, 4} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Image(%d) did not panic", i)
				}
			}()
			s.Image(i)
		}()
	}
}

func TestSetFilter(t *testing.T) {
	s := tinySet(10, 3) // labels 0 1 2 0 1 2 0 1 2 0
	calls := 0
	odd := s.Filter(func(l uint8) bool { calls++; return l != 1 })
	if calls != s.N {
		t.Errorf("keep called %d times, want once per image (%d)", calls, s.N)
	}
	wantIdx := []int{0, 2, 3, 5, 6, 8, 9}
	if odd.N != len(wantIdx) || len(odd.Labels) != odd.N || len(odd.Pixels) != odd.N*odd.Dim() {
		t.Fatalf("Filter: N=%d, %d labels, %d pixels; want %d images", odd.N, len(odd.Labels), len(odd.Pixels), len(wantIdx))
	}
	if odd.Rows != 2 || odd.Cols != 3 || odd.Classes != 3 {
		t.Errorf("Filter changed the shape: %dx%d, %d classes", odd.Rows, odd.Cols, odd.Classes)
	}
	for j, i := range wantIdx {
		if odd.Labels[j] != s.Labels[i] || !slices.Equal(odd.Image(j), s.Image(i)) {
			t.Errorf("filtered image %d is not original image %d", j, i)
		}
	}
	odd.Pixels[0] = 200
	if s.Pixels[0] == 200 {
		t.Error("Filter result shares pixels with the original")
	}

	none := s.Filter(func(uint8) bool { return false })
	if none.N != 0 || len(none.Pixels) != 0 || len(none.Labels) != 0 {
		t.Errorf("Filter(none) = %+v", none)
	}
	all := s.Filter(func(uint8) bool { return true })
	if !slices.Equal(all.Pixels, s.Pixels) || !slices.Equal(all.Labels, s.Labels) {
		t.Error("Filter(all) differs from the original")
	}
}

func TestSetCounts(t *testing.T) {
	s := tinySet(10, 3)
	if got, want := s.Counts(), []int{4, 3, 3}; !slices.Equal(got, want) {
		t.Errorf("Counts = %v, want %v", got, want)
	}
}
