// Package tracetest runs golden interaction traces, after etcd raft's: a
// trace file is a script of commands, each followed by a "----" line and the
// output it must print, cases separated by blank lines; lines starting with
// "#" are comments kept with the next command. node and simnet drive their
// own commands through it.
package tracetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Case is one command of a trace and the output it must print.
type Case struct {
	Comments []string
	Cmd      string
	Want     string
}

// Parse reads the trace file at path.
func Parse(t testing.TB, path string) []Case {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var out []Case
	var cur Case
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case l == "":
		case strings.HasPrefix(l, "#"):
			cur.Comments = append(cur.Comments, l)
		default:
			cur.Cmd = l
			if i+1 >= len(lines) || lines[i+1] != "----" {
				t.Fatalf("%s:%d: command without ---- line", path, i+1)
			}
			i += 2
			var want []string
			for ; i < len(lines) && lines[i] != ""; i++ {
				want = append(want, lines[i])
			}
			cur.Want = strings.Join(want, "\n")
			out = append(out, cur)
			cur = Case{}
		}
	}
	return out
}

// RunDir runs every testdata/*.txt trace as a subtest: newDo makes a fresh
// environment for a file and returns the function that runs one command and
// returns what it printed. With rewrite, the files' expected outputs are
// replaced by what the commands print.
func RunDir(t *testing.T, rewrite bool, newDo func(t *testing.T) func(cmd string) string) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no trace files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { Run(t, f, rewrite, newDo(t)) })
	}
}

// Run runs the trace at path through do, which runs one command and returns
// what it printed, and checks every output (or, with rewrite, writes them
// into the file).
func Run(t *testing.T, path string, rewrite bool, do func(cmd string) string) {
	t.Helper()
	var rewritten strings.Builder
	for _, c := range Parse(t, path) {
		got := strings.TrimRight(do(c.Cmd), "\n")
		if rewrite {
			for _, l := range c.Comments {
				rewritten.WriteString(l + "\n")
			}
			rewritten.WriteString(c.Cmd + "\n----\n")
			if got != "" {
				rewritten.WriteString(got + "\n")
			}
			rewritten.WriteString("\n")
			continue
		}
		if got != c.Want {
			t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", path, c.Cmd, got, c.Want)
		}
	}
	if rewrite {
		if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
