// Package sweeps holds the repository's sweep files (see package sweep for
// their format), embedded so that commands such as `node robustness` run
// them from any directory.
package sweeps

import "embed"

// Files are the *.toml sweep files of this directory.
//
//go:embed *.toml
var Files embed.FS

// Robustness is the file of the robustness table.
const Robustness = "robustness.toml"

// Smoke is a sweep that runs in a few seconds.
const Smoke = "smoke.toml"
