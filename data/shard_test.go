package data

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// synthSet is an MNIST-shaped set of n images whose pixels tell them apart.
func synthSet(n int) *Set {
	s := &Set{N: n, Rows: 28, Cols: 28, Classes: MNISTClasses, Pixels: make([]uint8, n*784), Labels: make([]uint8, n)}
	for i := range n {
		img := s.Pixels[i*784 : (i+1)*784]
		for j := range img {
			img[j] = uint8(i*31 + j*7)
		}
		s.Labels[i] = uint8((i * 3) % MNISTClasses)
	}
	return s
}

// subset is the Set WriteShard should write for indices.
func subset(s *Set, indices []int) *Set {
	out := &Set{N: len(indices), Rows: s.Rows, Cols: s.Cols, Classes: s.Classes, Pixels: []uint8{}, Labels: []uint8{}}
	for _, i := range indices {
		out.Pixels = append(out.Pixels, s.Image(i)...)
		out.Labels = append(out.Labels, s.Labels[i])
	}
	return out
}

func sameSet(t *testing.T, what string, got, want *Set) {
	t.Helper()
	if got.N != want.N || got.Rows != want.Rows || got.Cols != want.Cols || got.Classes != want.Classes ||
		!bytes.Equal(got.Pixels, want.Pixels) || !bytes.Equal(got.Labels, want.Labels) {
		t.Errorf("%s: got %d images of %dx%d (%d classes), want %d of %dx%d (%d classes); pixels equal %v, labels equal %v",
			what, got.N, got.Rows, got.Cols, got.Classes, want.N, want.Rows, want.Cols, want.Classes,
			bytes.Equal(got.Pixels, want.Pixels), bytes.Equal(got.Labels, want.Labels))
	}
}

// dirNames lists dir, so tests can see that no temporary file is left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteShardLoadShard(t *testing.T) {
	set := synthSet(50)
	for _, indices := range [][]int{{3, 7, 7, 0, 49}, {0}, nil, {}, slices.Collect(func(yield func(int) bool) {
		for i := range 50 {
			if !yield(49 - i) {
				return
			}
		}
	})} {
		dir := filepath.Join(t.TempDir(), "peer-000") // WriteShard creates it
		if err := WriteShard(dir, set, indices); err != nil {
			t.Fatal(err)
		}
		if got, want := dirNames(t, dir), []string{trainImagesFile, trainLabelsFile}; !slices.Equal(got, want) {
			t.Errorf("%v: dir holds %v, want %v", indices, got, want)
		}
		for _, name := range []string{trainImagesFile, trainLabelsFile} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("%s: %v, mode %v", name, err, fi.Mode())
			}
		}
		got, err := LoadShard(dir)
		if err != nil {
			t.Fatalf("%v: %v", indices, err)
		}
		sameSet(t, "shard", got, subset(set, indices))
	}
}

func TestLoadShardGzipAndStaleGzip(t *testing.T) {
	set := synthSet(20)
	dir := t.TempDir()
	// A shard as GoMNIST ships its files: gzipped.
	writeIDX(t, dir, trainImagesFile, idxImages(20, 28, 28, set.Pixels), false)
	writeIDX(t, dir, trainLabelsFile, idxLabels(20, set.Labels), false)
	got, err := LoadShard(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, "gzipped shard", got, set)

	// Writing a shard over it removes the .gz files, which would win.
	if err := WriteShard(dir, set, []int{5, 6}); err != nil {
		t.Fatal(err)
	}
	if got, want := dirNames(t, dir), []string{trainImagesFile, trainLabelsFile}; !slices.Equal(got, want) {
		t.Errorf("dir holds %v, want %v", got, want)
	}
	got, err = LoadShard(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, "rewritten shard", got, subset(set, []int{5, 6}))
}

func TestWriteShardErrors(t *testing.T) {
	good := synthSet(10)
	badLabel := synthSet(10)
	badLabel.Labels[4] = 12
	small := &Set{N: 1, Rows: 14, Cols: 14, Classes: 10, Pixels: make([]uint8, 196), Labels: []uint8{1}}
	short := synthSet(10)
	short.Pixels = short.Pixels[:len(short.Pixels)-1]
	for _, tt := range []struct {
		name    string
		set     *Set
		indices []int
		want    string
	}{
		{"index too big", good, []int{1, 10}, "index 10 out of range [0,10)"},
		{"negative index", good, []int{-1}, "index -1 out of range"},
		{"label 12", badLabel, []int{3, 4}, "label 12 at index 1, want 0..9"},
		{"not 28x28", small, []int{0}, "images are 14x14, want 28x28"},
		{"short pixels", short, []int{0}, "set of 10 images has 7839 pixels and 10 labels"},
		{"nil set", nil, nil, "nil set"},
	} {
		dir := t.TempDir()
		// An earlier shard, which a failed write must leave intact.
		if err := WriteShard(dir, good, []int{1, 2}); err != nil {
			t.Fatal(err)
		}
		err := WriteShard(dir, tt.set, tt.indices)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
		if got := dirNames(t, dir); len(got) != 2 {
			t.Errorf("%s: after a failed write the dir holds %v", tt.name, got)
		}
		got, err := LoadShard(dir)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		sameSet(t, tt.name+": the earlier shard", got, subset(good, []int{1, 2}))
	}

	// A file where the directory should be.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if err := WriteShard(file, good, []int{1}); err == nil {
		t.Error("wrote a shard into a file")
	}
}

func TestLoadShardErrors(t *testing.T) {
	set := synthSet(10)
	for _, tt := range []struct {
		name   string
		images []byte
		labels []byte
		want   []string
	}{
		{"count mismatch", idxImages(10, 28, 28, set.Pixels), idxLabels(9, set.Labels[:9]), []string{"has 9 labels", "has 10 images"}},
		{"not 28x28", idxImages(10, 14, 56, set.Pixels), idxLabels(10, set.Labels), []string{"images are 14x56, want 28x28"}},
		{"labels missing", idxImages(10, 28, 28, set.Pixels), nil, []string{"neither", trainLabelsFile}},
		{"truncated", idxImages(10, 28, 28, set.Pixels[:100]), idxLabels(10, set.Labels), []string{trainImagesFile, "truncated data"}},
	} {
		dir := t.TempDir()
		writeIDX(t, dir, trainImagesFile, tt.images, true)
		if tt.labels != nil {
			writeIDX(t, dir, trainLabelsFile, tt.labels, true)
		}
		_, err := LoadShard(dir)
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %v does not mention %q", tt.name, err, w)
			}
		}
	}
}

func TestWriteTestSetLoadTestSet(t *testing.T) {
	set := synthSet(30)
	dir := filepath.Join(t.TempDir(), "test")
	if err := WriteTestSet(dir, set); err != nil {
		t.Fatal(err)
	}
	if got, want := dirNames(t, dir), []string{testImagesFile, testLabelsFile}; !slices.Equal(got, want) {
		t.Errorf("dir holds %v, want %v", got, want)
	}
	got, err := LoadTestSet(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, "test set", got, set)
	if _, err := LoadShard(dir); err == nil {
		t.Error("LoadShard read a test set")
	}
	if err := WriteTestSet(dir, subset(set, nil)); err == nil || !strings.Contains(err.Error(), "no images") {
		t.Errorf("empty test set: %v", err)
	}
	// An empty test set on disk is refused too: nothing to evaluate on.
	writeIDX(t, dir, testImagesFile, idxImages(0, 28, 28, nil), true)
	writeIDX(t, dir, testLabelsFile, idxLabels(0, nil), true)
	if _, err := LoadTestSet(dir); err == nil || !strings.Contains(err.Error(), "no images") {
		t.Errorf("empty test set on disk: %v", err)
	}
}

// TestShardsOfRealMNIST loads the module's MNIST files, gzipped, with
// LoadTestSet and LoadShard, and round-trips a real shard.
func TestShardsOfRealMNIST(t *testing.T) {
	dir, train, test := realMNIST(t)
	gotTest, err := LoadTestSet(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, "LoadTestSet of the MNIST directory", gotTest, test)

	spec, err := ParseSpec("dirichlet:1.0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := spec.Split(train.Labels, train.Classes, 100, 7)
	if err != nil {
		t.Fatal(err)
	}
	shardDir := t.TempDir()
	if err := WriteShard(shardDir, train, p[42]); err != nil {
		t.Fatal(err)
	}
	got, err := LoadShard(shardDir)
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, "shard 42", got, subset(train, p[42]))

	if testing.Short() {
		return
	}
	whole, err := LoadShard(dir) // the whole training set is a shard too
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, "LoadShard of the MNIST directory", whole, train)
}
