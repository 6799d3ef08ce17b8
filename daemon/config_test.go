package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoMemoryLimit: the environment's GOMEMLIMIT wins, then the config's
// go_memory_limit, then the edge profile's 32 MiB; the default profile sets
// none.
func TestGoMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		profile string
		limit   int64
		env     string
		want    int64
	}{
		{"", 0, "", 0},
		{"edge", 0, "", edgeGoMemLimit},
		{"edge", 200 << 20, "", 200 << 20},
		{"", 50 << 20, "", 50 << 20},
		{"edge", 200 << 20, "80MiB", 0},
		{"", 0, "1GiB", 0},
	} {
		cfg := DefaultConfig(0, 0)
		cfg.Profile, cfg.GoMemoryLimit = tc.profile, tc.limit
		if got := goMemoryLimit(cfg, tc.env); got != tc.want {
			t.Errorf("profile %q, go_memory_limit %d, GOMEMLIMIT %q: %d, want %d", tc.profile, tc.limit, tc.env, got, tc.want)
		}
	}
}

// TestConfigGoMemoryLimit: go_memory_limit round-trips through the file and
// a negative one is refused naming the key.
func TestConfigGoMemoryLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), ConfigFile)
	cfg := DefaultConfig(4001, 4002)
	cfg.Profile, cfg.GoMemoryLimit = "edge", 48<<20
	b, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.GoMemoryLimit != 48<<20 || got.Profile != "edge" {
		t.Fatalf("read back go_memory_limit %d, profile %q", got.GoMemoryLimit, got.Profile)
	}
	bad := strings.Replace(string(b), "go_memory_limit = 50331648", "go_memory_limit = -1", 1)
	if bad == string(b) {
		t.Fatalf("the encoded config has no go_memory_limit line:\n%s", b)
	}
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "go_memory_limit") {
		t.Fatalf("negative go_memory_limit: %v, want an error naming it", err)
	}
}
