package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

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
