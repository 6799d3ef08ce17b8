package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fedrank/fedrank/daemon"
)

// requireQemuEnv, when set (CI sets it), turns a missing emulator into a
// failure instead of a skip: the cross-architecture test must not vanish
// from CI because an install step broke.
const requireQemuEnv = "FEDRANK_REQUIRE_QEMU"

// crossTarget is a foreign architecture run under qemu's user-mode
// emulation.
type crossTarget struct {
	goarch, goarm, qemu string
}

var crossTargets = []crossTarget{
	{"arm64", "", "qemu-aarch64-static"},
	{"arm", "7", "qemu-arm-static"},
}

var crossBuilds sync.Map // goarch+goarm -> func() (string, error)

// buildCross builds the node binary for linux/goarch, once per test run,
// the way scripts/build.sh does (static, stripped).
func buildCross(tg crossTarget) (string, error) {
	f, _ := crossBuilds.LoadOrStore(tg.goarch+tg.goarm, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "fedrank-e2e-cross")
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, "node-"+tg.goarch+tg.goarm)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tg.goarch, "GOARM="+tg.goarm)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build for %s: %v\n%s", tg.goarch, err, out)
		}
		return bin, nil
	}))
	return f.(func() (string, error))()
}

// crossCommand returns the command that runs the node binary of tg under
// emulation; without the emulator it skips the test, or fails it when
// FEDRANK_REQUIRE_QEMU is set.
func crossCommand(t *testing.T, tg crossTarget) []string {
	t.Helper()
	qemu, err := exec.LookPath(tg.qemu)
	if err != nil {
		if os.Getenv(requireQemuEnv) != "" {
			t.Fatalf("%s is set but %s is not installed (Debian: apt-get install qemu-user-static)", requireQemuEnv, tg.qemu)
		}
		t.Skipf("%s not installed (Debian: qemu-user-static); CI installs it and sets %s", tg.qemu, requireQemuEnv)
	}
	bin, err := buildCross(tg)
	if err != nil {
		t.Fatal(err)
	}
	return []string{qemu, bin}
}

// TestE2ECrossArch runs a federation of mixed architectures on loopback: the
// aggregator and two trainers are this machine's binary, one trainer is the
// linux/arm64 binary and one the linux/arm (armv7) binary, both under qemu
// user-mode emulation, as on a Raspberry Pi. Every round takes all four
// trainers (per_round = quorum = 4), so no round closes without the
// emulated ones. It checks that every peer holds the aggregator's model
// hash for every round, whatever architecture trained; then it kills the
// arm64 trainer with SIGKILL in the middle of writing its round-2 update
// (its payload on disk, the record not: an SD card losing power
// mid-write), checks that its store opens and reads, restarts it, and
// checks that it rejoins and the federation finishes with the same hashes
// everywhere.
func TestE2ECrossArch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts emulated processes; the race run skips it")
	}
	run := map[int][]string{3: crossCommand(t, crossTargets[0]), 4: crossCommand(t, crossTargets[1])}
	c := newE2ECluster(t, 5, 100)
	c.run = run
	for i := 3; i <= 4; i++ {
		setProfile(t, c.homes[i], "edge") // as on a board
	}
	const rounds = 4
	c.genesis("--scenario", "frl-mnist", "--rounds", fmt.Sprint(rounds), "--per-round", "4", "--quorum", "4",
		"--round-timeout", "300s", "--retry", "1s", "--seed", "3")

	c.start(0)
	c.start(1)
	c.start(2)
	c.start(4)
	c.start(3, daemon.FaultEnv+"=pending:2")
	c.waitRound(1, 300*time.Second, c.all()...)
	if !c.waitExit(3, 300*time.Second) {
		t.Fatalf("the arm64 trainer did not die by SIGKILL in its round-2 write: %v\n%s", c.procs[3].err, c.log(3))
	}
	// The store it left opens (read-only, as status does) and holds
	// round 1; the half-written update is not visible.
	s, err := c.status(3)
	if err != nil {
		t.Fatalf("the killed trainer's store: %v", err)
	}
	if s.Daemon.Running || len(s.Rounds) < 1 {
		t.Fatalf("the killed trainer's store: running %v, %d rounds, want stopped with round 1", s.Daemon.Running, len(s.Rounds))
	}
	c.start(3)
	c.waitRound(rounds, 600*time.Second, c.all()...)
	c.waitEval(rounds, 120*time.Second)

	want := c.roundHashes(0)
	for i := range c.homes {
		if got := c.roundHashes(i); !slices.Equal(got[:rounds], want[:rounds]) {
			t.Errorf("peer %d's round hashes %v, the aggregator's %v", i, got, want)
		}
	}
	agg, err := c.status(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range agg.Rounds {
		if r.Accepted != 4 {
			t.Errorf("round %d: %d updates accepted, want all 4 trainers' (the emulated ones included)", r.Round, r.Accepted)
		}
	}
	if last := agg.Rounds[len(agg.Rounds)-1]; last.Accuracy < 0.5 {
		t.Errorf("round %d accuracy %.4f, want > 0.5", last.Round, last.Accuracy)
	}
	for i := range c.homes {
		c.stop(i)
	}
}

// editConfig changes the node configuration in home.
func editConfig(tb testing.TB, home string, edit func(*daemon.Config)) {
	tb.Helper()
	path := filepath.Join(home, daemon.ConfigFile)
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		tb.Fatal(err)
	}
	edit(&cfg)
	b, err := cfg.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// setProfile sets the profile of the node configuration in home.
func setProfile(tb testing.TB, home, profile string) {
	tb.Helper()
	editConfig(tb, home, func(c *daemon.Config) { c.Profile = profile })
}
