package data

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Spec
		str  string // String of the result
		err  string // substring of the error, if one is expected
	}{
		{in: "iid", want: Spec{Kind: KindIID}, str: "iid"},
		{in: " IID ", want: Spec{Kind: KindIID}, str: "iid"},
		{in: "dirichlet:1.0", want: Spec{Kind: KindDirichlet, Alpha: 1}, str: "dirichlet:1.0"},
		{in: "dirichlet:1", want: Spec{Kind: KindDirichlet, Alpha: 1}, str: "dirichlet:1.0"},
		{in: "Dirichlet: 0.5", want: Spec{Kind: KindDirichlet, Alpha: 0.5}, str: "dirichlet:0.5"},
		{in: "dirichlet:1e-3", want: Spec{Kind: KindDirichlet, Alpha: 0.001}, str: "dirichlet:0.001"},
		{in: "dirichlet:1e-7", want: Spec{Kind: KindDirichlet, Alpha: 1e-7}, str: "dirichlet:1e-07"},
		{in: "dirichlet:100", want: Spec{Kind: KindDirichlet, Alpha: 100}, str: "dirichlet:100.0"},
		{in: "shards:2", want: Spec{Kind: KindShards, Shards: 2}, str: "shards:2"},
		{in: "shards:+3", want: Spec{Kind: KindShards, Shards: 3}, str: "shards:3"},

		{in: "", err: `empty partition spec; want one of "iid", "dirichlet:ALPHA"`},
		{in: "  ", err: "empty partition spec"},
		{in: "random", err: `unknown kind "random"; want one of "iid", "dirichlet:ALPHA" (ALPHA > 0, e.g. dirichlet:1.0) or "shards:K"`},
		{in: ":1", err: "no kind before the colon"},
		{in: "iid:2", err: "iid takes no parameter"},
		{in: "iid:", err: "iid takes no parameter"},
		{in: "dirichlet", err: "dirichlet needs a concentration, e.g. dirichlet:1.0"},
		{in: "dirichlet:", err: "dirichlet needs a concentration"},
		{in: "dirichlet:0", err: "dirichlet alpha must be > 0, got 0"},
		{in: "dirichlet:-1", err: "dirichlet alpha must be > 0, got -1"},
		{in: "dirichlet:NaN", err: "dirichlet alpha must be > 0, got NaN"},
		{in: "dirichlet:inf", err: "dirichlet alpha must be finite"},
		{in: "dirichlet:1e999", err: `dirichlet alpha "1e999" is not a number`},
		{in: "dirichlet:abc", err: `dirichlet alpha "abc" is not a number`},
		{in: "dirichlet:1:2", err: `dirichlet alpha "1:2" is not a number`},
		{in: "shards", err: "shards needs the number of shards per client, e.g. shards:2"},
		{in: "shards:0", err: "shards per client must be > 0, got 0"},
		{in: "shards:-2", err: "shards per client must be > 0"},
		{in: "shards:1.5", err: `shards per client "1.5" is not an integer`},
	} {
		got, err := ParseSpec(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseSpec(%q) = %v, %v; want an error mentioning %q", tt.in, got, err, tt.err)
			}
			if err != nil && strings.TrimSpace(tt.in) != "" && !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParseSpec(%q): error %q does not quote the input", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseSpec(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		if back, err := ParseSpec(got.String()); err != nil || back != got {
			t.Errorf("ParseSpec(%q) does not read back: %+v, %v", got.String(), back, err)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tt := range []struct {
		s    Spec
		want string
	}{
		{Spec{}, "no partition kind"},
		{Spec{Kind: "IID"}, `unknown partition kind "IID"`},
		{Spec{Kind: KindDirichlet}, "alpha must be > 0"},
		{Spec{Kind: KindShards}, "shards per client must be > 0"},
	} {
		if err := tt.s.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v.Validate() = %v, want an error mentioning %q", tt.s, err, tt.want)
		}
		if _, err := tt.s.Split(cycleLabels(100, 10), 10, 5, 1); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v.Split: %v, want an error mentioning %q", tt.s, err, tt.want)
		}
	}
	if s := (Spec{}).String(); s != "" {
		t.Errorf("zero Spec prints as %q, want \"\"", s)
	}
}

func TestSpecSplit(t *testing.T) {
	labels := cycleLabels(1000, 10)
	for _, tt := range []struct {
		spec string
		want func() (Partition, error)
	}{
		{"iid", func() (Partition, error) { return IID(1000, 20, 3) }},
		{"dirichlet:0.5", func() (Partition, error) { return Dirichlet(labels, 10, 20, 0.5, 3) }},
		{"shards:2", func() (Partition, error) { return Shards(labels, 20, 2, 3) }},
	} {
		s, err := ParseSpec(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Split(labels, 10, 20, 3)
		if err != nil {
			t.Fatalf("%s: %v", tt.spec, err)
		}
		want, _ := tt.want()
		if hashPartition(got) != hashPartition(want) {
			t.Errorf("%s: Split differs from calling the partitioner", tt.spec)
		}
	}
	// Argument errors come through.
	if _, err := (Spec{Kind: KindIID}).Split(labels, 10, 2000, 1); err == nil {
		t.Error("iid split of 1000 examples among 2000 clients succeeded")
	}
}

func TestSpecFlag(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	spec := Spec{Kind: KindDirichlet, Alpha: 1}
	fs.Var(&spec, "partition", "how to split the training set")
	if err := fs.Parse([]string{"-partition", "shards:3"}); err != nil {
		t.Fatal(err)
	}
	if spec != (Spec{Kind: KindShards, Shards: 3}) {
		t.Errorf("flag set spec to %+v", spec)
	}
	err := fs.Parse([]string{"-partition", "dirichlet:0"})
	if err == nil || !strings.Contains(err.Error(), "dirichlet alpha must be > 0") {
		t.Errorf("bad flag value: %v", err)
	}
}
