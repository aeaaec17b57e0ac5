// Command pve-image turns OCI and Docker images into Proxmox VE container
// templates.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

func main() {
	// Keep the heap near what a conversion needs: the zstd encoder's job
	// buffers churn through sync.Pools, and the default GOGC lets that
	// garbage double the heap. The limit is soft (the runtime exceeds it
	// when the live heap does, for images with millions of files);
	// GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(160 << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfiles := startProfiles()
	err := newRootCommand().ExecuteContext(ctx)
	stopProfiles()
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "pve-image:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a status and no further message; the
// command has printed what went wrong.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// startProfiles writes CPU and heap profiles when PVE_IMAGE_CPUPROFILE or
// PVE_IMAGE_MEMPROFILE name files: the benchmark's way to see where a
// conversion spends its time and memory.
func startProfiles() (stop func()) {
	var stops []func()
	if p := os.Getenv("PVE_IMAGE_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("PVE_IMAGE_MEMPROFILE"); p != "" {
		stops = append(stops, func() {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}
