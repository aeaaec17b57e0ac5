package runtime

import (
	"context"
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
	rpcs        *prometheus.CounterVec
	rpcTime     *prometheus.HistogramVec
}

// NewMetrics registers the series.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pve_image_pulls_total", Help: "PullImage calls by result (ok, error).",
		}, []string{"result"}),
		pullTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pve_image_pull_duration_seconds", Help: "Time to pull, convert and store an image.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
		}),
		conversions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pve_image_conversions_total", Help: "Images converted into templates (cache misses).",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pve_image_cache_hits_total", Help: "Pulls answered from the template cache.",
		}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pve_image_grpc_requests_total", Help: "CRI calls by method and gRPC code.",
		}, []string{"method", "code"}),
		rpcTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pve_image_grpc_request_duration_seconds", Help: "CRI call latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method"}),
	}
	m.Registry.MustRegister(m.pulls, m.pullTime, m.conversions, m.cacheHits, m.rpcs, m.rpcTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// interceptor counts and times every unary call.
func (m *Metrics) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := next(ctx, req)
	m.rpcs.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	m.rpcTime.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	return resp, err
}
