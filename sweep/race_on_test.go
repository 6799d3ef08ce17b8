//go:build race

package sweep

// raceEnabled tells tests that the race detector slows everything ~10x.
const raceEnabled = true
