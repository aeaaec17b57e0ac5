package runtime

import "testing"

func TestCPUMeterIsMonotonic(t *testing.T) {
	var m cpuMeter
	// load (cores busy) at seconds since the first sample; uptime 10 s.
	samples := []struct {
		at   int64
		load float64
		want uint64
	}{
		{0, 0.5, 5e9},  // first: load over the uptime
		{2, 0.0, 5e9},  // idle: no growth, and never less
		{4, 2.0, 9e9},  // two cores busy for 2 s
		{3, 9.0, 9e9},  // a sample from the past changes nothing
		{5, 1.0, 10e9}, //
		{5, 1.0, 10e9}, // the same instant again
		{6, -1, 10e9},  // a negative load (never reported) takes nothing away
	}
	var last uint64
	for i, s := range samples {
		got := m.add("c", s.load, 10, 1e12+s.at*1e9)
		if got != s.want || got < last {
			t.Fatalf("sample %d: total %d, want %d (last %d)", i, got, s.want, last)
		}
		last = got
	}
	m.forget("c")
	if got := m.add("c", 0.1, 100, 2e12); got != 10e9 {
		t.Errorf("after forget the total starts again from load × uptime: %d", got)
	}
}
