package batch

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
)

// Statuses of a Result.
const (
	// Built: converted here, in this run.
	Built = "built"
	// Cached: the cache or the template registry had it.
	Cached = "cached"
	// Failed: see Error; the other items still ran.
	Failed = "failed"
	// Planned: a dry run found it in neither; a build would convert it.
	Planned = "planned"
)

// Origins of a template: where its bytes came from.
const (
	FromCache     = "cache"
	FromRegistry  = "template-registry"
	FromConverted = "converted"
)

// Result is what happened to one image and platform.
type Result struct {
	// Ref is the image as the build file names it, normalised.
	Ref      string `json:"ref"`
	Platform string `json:"platform"`
	// Digest is the platform's source manifest.
	Digest string `json:"digest"`
	// File is the template: in the output directory when there is one,
	// else in the cache.
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Status is built, cached, failed (or planned, in a dry run).
	Status string `json:"status"`
	Error  string `json:"error"`
	// Seconds is the item's wall time.
	Seconds float64 `json:"seconds"`
	// Destinations are where the template was delivered: dir:PATH,
	// registry:REPO@DIGEST, proxmox:NODE/VOLID.
	Destinations []string `json:"destinations"`
	// Key is the template's cache key (and template registry tag's);
	// Origin where its bytes came from (cache, template-registry,
	// converted); Line the build file line of the image.
	Key    string `json:"key,omitempty"`
	Origin string `json:"origin,omitempty"`
	Line   int    `json:"line"`
}

// Report is a build's results, one per image and platform, in build file
// order.
type Report struct {
	Results []*Result `json:"results"`
}

// Failed counts the failed results.
func (r *Report) Failed() int {
	n := 0
	for _, res := range r.Results {
		if res.Status == Failed {
			n++
		}
	}
	return n
}

// Count counts the results of a status.
func (r *Report) Count(status string) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == status {
			n++
		}
	}
	return n
}

// Summary says in one line what the build did.
func (r *Report) Summary() string {
	s := fmt.Sprintf("%d templates: %d built, %d cached, %d failed", len(r.Results), r.Count(Built), r.Count(Cached), r.Count(Failed))
	if n := r.Count(Planned); n > 0 {
		s += fmt.Sprintf(", %d to build", n)
	}
	return s
}

// JSON is the report as {"results": [...]}.
func (r *Report) JSON() []byte {
	if r.Results == nil {
		r.Results = []*Result{}
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}

// WriteJSON writes the JSON report to path, atomically.
func (r *Report) WriteJSON(path string) error { return writeFileAtomic(path, r.JSON()) }

// JUnit is the report as JUnit XML, which CI systems show: a test suite
// with a test case per image (class) and platform (name).
func (r *Report) JUnit(suite string) []byte {
	type failure struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	}
	type skipped struct {
		Message string `xml:"message,attr"`
	}
	type testcase struct {
		Name      string   `xml:"name,attr"`
		Classname string   `xml:"classname,attr"`
		Time      string   `xml:"time,attr"`
		Failure   *failure `xml:"failure,omitempty"`
		Skipped   *skipped `xml:"skipped,omitempty"`
		SystemOut string   `xml:"system-out,omitempty"`
	}
	type testsuite struct {
		XMLName  xml.Name   `xml:"testsuite"`
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Errors   int        `xml:"errors,attr"`
		Skipped  int        `xml:"skipped,attr"`
		Time     string     `xml:"time,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	type testsuites struct {
		XMLName xml.Name    `xml:"testsuites"`
		Suites  []testsuite `xml:"testsuite"`
	}
	ts := testsuite{Name: suite, Tests: len(r.Results)}
	var total float64
	for _, res := range r.Results {
		total += res.Seconds
		tc := testcase{Name: res.Platform, Classname: res.Ref, Time: fmt.Sprintf("%.3f", res.Seconds)}
		var out strings.Builder
		fmt.Fprintf(&out, "status: %s\n", res.Status)
		if res.Digest != "" {
			fmt.Fprintf(&out, "digest: %s\n", res.Digest)
		}
		if res.File != "" {
			fmt.Fprintf(&out, "file: %s\nsha256: %s\nsize: %d\n", res.File, res.SHA256, res.Size)
		}
		for _, d := range res.Destinations {
			fmt.Fprintf(&out, "destination: %s\n", d)
		}
		tc.SystemOut = out.String()
		switch res.Status {
		case Failed:
			ts.Failures++
			msg, _, _ := strings.Cut(res.Error, "\n")
			tc.Failure = &failure{Message: msg, Type: "failed", Text: res.Error}
		case Planned:
			ts.Skipped++
			tc.Skipped = &skipped{"dry run: would be built"}
		}
		ts.Cases = append(ts.Cases, tc)
	}
	ts.Time = fmt.Sprintf("%.3f", total)
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	enc.Encode(testsuites{Suites: []testsuite{ts}})
	b.WriteByte('\n')
	return b.Bytes()
}

// WriteJUnit writes the JUnit report to path, atomically.
func (r *Report) WriteJUnit(path, suite string) error { return writeFileAtomic(path, r.JUnit(suite)) }
