package runtime

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics are the daemon's Prometheus series, in their own registry.
type Metrics struct {
	Registry    *prometheus.Registry
	pulls       *prometheus.CounterVec
	pullTime    prometheus.Histogram
	conversions prometheus.Counter
	cacheHits   prometheus.Counter
	fetched     prometheus.Counter
	rpcs        *prometheus.CounterVec
	rpcTime     *prometheus.HistogramVec
	// The phases of a pod's life, and where their time goes.
	rpcProxmox      *prometheus.HistogramVec
	proxmoxTime     *prometheus.HistogramVec
	createToRunning *prometheus.HistogramVec
	stopTime        *prometheus.HistogramVec
	removeTime      *prometheus.HistogramVec
	created         *prometheus.CounterVec
	cloneQueue      prometheus.Histogram
	templates       *prometheus.CounterVec
}

// The rootfs label: how a container's root disk was made.
const (
	rootfsClone   = "linked-clone" // a linked clone of the image's template container
	rootfsExtract = "extract"      // Proxmox unpacked the template into a new volume
)

// NewMetrics registers the series.
func NewMetrics() *Metrics {
	// Pod phases take from a few hundred milliseconds (a linked clone
	// started) to minutes (a big image unpacked on a slow storage).
	phase := prometheus.ExponentialBuckets(0.05, 2, 13)
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pve_image_pulls_total", Help: "PullImage calls by result (ok, error).",
		}, []string{"result"}),
		pullTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pve_image_pull_duration_seconds", Help: "Time to pull, convert and store an image (PullImage).",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
		}),
		conversions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pve_image_conversions_total", Help: "Images converted into templates (cache misses).",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pve_image_cache_hits_total", Help: "Pulls answered from the template cache.",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pve_image_template_registry_fetches_total", Help: "Templates not in the cache taken ready from the template registry (--template-registry), not converted.",
		}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pve_image_grpc_requests_total", Help: "CRI calls by method and gRPC code.",
		}, []string{"method", "code"}),
		rpcTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pve_image_grpc_request_duration_seconds", Help: "CRI call latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method"}),
		rpcProxmox: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pve_image_grpc_request_proxmox_duration_seconds",
			Help:    "The part of each CRI call's latency spent in Proxmox API calls and their tasks, by method; the rest of pve_image_grpc_request_duration_seconds is the daemon's own, less pve_image_linked_clone_queue_wait_seconds for creates. PullImage calls of one image at once share one pull: its Proxmox time (the template's upload) counts in the call that started it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method"}),
		proxmoxTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pve_image_proxmox_call_duration_seconds",
			Help:    "Proxmox API calls by what they do (create, clone, template, config, start, stop, shutdown, destroy, status, list, ...), each with the wait for its task.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}, []string{"call"}),
		createToRunning: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pve_image_container_create_to_running_seconds",
			Help:    "From CreateContainer's arrival to the end of a successful StartContainer, by how the root disk was made (linked-clone, extract).",
			Buckets: phase,
		}, []string{"rootfs"}),
		stopTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pve_image_container_stop_duration_seconds", Help: "StopContainer of a running container, until it stopped, by how its root disk was made (linked-clone, extract).",
			Buckets: phase,
		}, []string{"rootfs"}),
		removeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pve_image_container_remove_duration_seconds", Help: "RemoveContainer that destroyed a Proxmox container, by how its root disk was made.",
			Buckets: phase,
		}, []string{"rootfs"}),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pve_image_containers_created_total", Help: "Containers created and recorded by CreateContainer (not those it removed again), by how the root disk was made (linked-clone, extract).",
		}, []string{"rootfs"}),
		cloneQueue: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pve_image_linked_clone_queue_wait_seconds",
			Help:    "How long a create waited in the queue of its template container, behind the clones of other creates (Proxmox clones from one template one at a time); creates whose caller gave up in the queue are counted too. Not part of pve_image_grpc_request_proxmox_duration_seconds.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}),
		templates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pve_image_template_containers_total", Help: "Template containers for linked clones, by event (created, removed).",
		}, []string{"event"}),
	}
	m.Registry.MustRegister(m.pulls, m.pullTime, m.conversions, m.cacheHits, m.fetched, m.rpcs, m.rpcTime,
		m.rpcProxmox, m.proxmoxTime, m.createToRunning, m.stopTime, m.removeTime, m.created, m.cloneQueue, m.templates,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// interceptor counts and times every unary call, and the part of it
// spent waiting for Proxmox.
func (m *Metrics) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx, inPVE := withProxmoxTime(ctx)
	resp, err := next(ctx, req)
	m.rpcs.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	m.rpcTime.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	m.rpcProxmox.WithLabelValues(info.FullMethod).Observe(time.Duration(inPVE.Load()).Seconds())
	return resp, err
}

// proxmoxTimeKey carries a CRI call's time in Proxmox calls, in
// nanoseconds (*atomic.Int64).
type proxmoxTimeKey struct{}

func withProxmoxTime(ctx context.Context) (context.Context, *atomic.Int64) {
	n := &atomic.Int64{}
	return context.WithValue(ctx, proxmoxTimeKey{}, n), n
}

// addProxmoxTime counts d toward the CRI call ctx serves, if any.
func addProxmoxTime(ctx context.Context, d time.Duration) {
	if n, ok := ctx.Value(proxmoxTimeKey{}).(*atomic.Int64); ok {
		n.Add(int64(d))
	}
}
