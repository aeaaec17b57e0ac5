package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseSize reads a byte count: a number with an optional K, M, G or T
// suffix (powers of 1024; "KiB", "KB" and "K" all mean the same).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(t), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || !(v >= 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix", s)
	}
	return int64(v * float64(mult)), nil
}

// parseAge reads a duration as Go does, plus days ("7d", "1d12h").
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration: want e.g. 7d, 36h or 1d12h")
	}
	var days float64
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		d, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || !(d >= 0) || math.IsInf(d, 0) {
			return 0, fmt.Errorf("duration %q: want e.g. 7d, 36h or 1d12h", s)
		}
		days, rest = d, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("duration %q: want e.g. 7d, 36h or 1d12h", s)
		}
	}
	return d + time.Duration(days*24*float64(time.Hour)), nil
}
