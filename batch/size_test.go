package batch

import (
	"strings"
	"testing"
)

// TestParseSize: the sizes --max-size, cache prune --max-size, --chunk-size
// and build files take.
func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"512", 512},
		{"1K", 1 << 10},
		{"1KiB", 1 << 10},
		{"1kb", 1 << 10},
		{"1.5M", 3 << 19},
		{" 2G ", 2 << 30},
		{"64G", 64 << 30},
		{"1T", 1 << 40},
		{"10B", 10},
		{"4096T", 4096 << 40},
	} {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "G", "-1M", "ten", "NaN", "Inf", "1X", "1e30", "1e300T", "9000000T"} {
		_, err := ParseSize(in)
		if err == nil || !strings.Contains(err.Error(), "want a number with an optional K, M, G or T suffix") {
			t.Errorf("ParseSize(%q): error %v", in, err)
		}
	}
}
