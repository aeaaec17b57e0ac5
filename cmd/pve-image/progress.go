package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pve-image/pve-image/internal/bytesize"
)

// lineProgress prints one line when a blob starts and one when it ends, for
// logs and pipes.
type lineProgress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *lineProgress) Start(d v1.Descriptor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "fetching %s (%s)\n", short(d.Digest), bytesize.Format(d.Size))
}

func (p *lineProgress) Advance(v1.Descriptor, int64) {}

func (p *lineProgress) Done(d v1.Descriptor, cached bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		fmt.Fprintf(p.w, "failed   %s: %v\n", short(d.Digest), err)
	case cached:
		fmt.Fprintf(p.w, "cached   %s (%s)\n", short(d.Digest), bytesize.Format(d.Size))
	default:
		fmt.Fprintf(p.w, "fetched  %s (%s)\n", short(d.Digest), bytesize.Format(d.Size))
	}
}

// barProgress redraws one bar per blob on a terminal, at most ten times a
// second.
type barProgress struct {
	mu    sync.Mutex
	w     io.Writer
	order []v1.Hash
	bars  map[v1.Hash]*bar
	drawn int // lines drawn last time
	last  time.Time
}

type bar struct {
	d      v1.Descriptor
	n      int64
	status string
}

func newBarProgress(w io.Writer) *barProgress {
	return &barProgress{w: w, bars: map[v1.Hash]*bar{}}
}

func (p *barProgress) get(d v1.Descriptor) *bar {
	b := p.bars[d.Digest]
	if b == nil {
		b = &bar{d: d}
		p.bars[d.Digest] = b
		p.order = append(p.order, d.Digest)
	}
	return b
}

func (p *barProgress) Start(d v1.Descriptor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(d).status = "downloading"
	p.draw(true)
}

func (p *barProgress) Advance(d v1.Descriptor, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(d).n += n
	p.draw(false)
}

func (p *barProgress) Done(d v1.Descriptor, cached bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.get(d)
	switch {
	case err != nil:
		b.status = "failed: " + err.Error()
	case cached:
		b.status, b.n = "cached", d.Size
	default:
		b.status, b.n = "done", d.Size
	}
	p.draw(true)
}

func (p *barProgress) draw(force bool) {
	if !force && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	var sb strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", p.drawn)
	}
	for _, h := range p.order {
		b := p.bars[h]
		const width = 30
		fill := width
		if b.d.Size > 0 {
			fill = int(min(b.n, b.d.Size) * width / b.d.Size)
		}
		fmt.Fprintf(&sb, "\x1b[2K%s [%s%s] %9s / %-9s %s\n", short(h), strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			bytesize.Format(b.n), bytesize.Format(b.d.Size), b.status)
	}
	p.drawn = len(p.order)
	io.WriteString(p.w, sb.String())
}

func short(h v1.Hash) string {
	return h.Algorithm + ":" + h.Hex[:min(12, len(h.Hex))]
}
