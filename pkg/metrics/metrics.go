// Package metrics holds the Prometheus series the daemons export on
// /metrics, and the HTTP handler that serves them with /healthz and /readyz.
package metrics

import (
	"io"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Backup service series.
var (
	// Jobs counts finished backups, restores and deletes by result (ok, error, cancelled).
	Jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "blockvault", Name: "jobs_total", Help: "Finished backup, restore and delete jobs by operation and result.",
	}, []string{"operation", "result"})
	// JobSeconds is the duration of finished jobs.
	JobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "blockvault", Name: "job_duration_seconds", Help: "Duration of finished jobs by operation.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
	}, []string{"operation"})
	// Bytes counts bytes by direction: read (from sources), written (to
	// restore targets), stored (new bytes in the repository).
	Bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "blockvault", Name: "bytes_total", Help: "Bytes read from backup sources, written to restore targets, stored in the repository.",
	}, []string{"direction"})
	// Throughput is the rate of the latest progress update of running jobs.
	Throughput = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "blockvault", Name: "job_throughput_bytes_per_second", Help: "Effective throughput of the running jobs, by operation.",
	}, []string{"operation"})
	// Running is the number of jobs running; Queued those waiting for a slot.
	Running = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "blockvault", Name: "jobs_running", Help: "Jobs running now."})
	Queued  = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "blockvault", Name: "jobs_queued", Help: "Jobs waiting for a slot (queue depth)."})
	// TemporaryResources is the temporary snapshots and volumes alive, by kind.
	TemporaryResources = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "blockvault", Name: "temporary_resources", Help: "Temporary snapshots and volumes of running backups, by kind.",
	}, []string{"kind"})
)

// Volume manager series.
var (
	// Exports is the number of NBD exports served.
	Exports = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "blockvault", Name: "exports", Help: "NBD exports served now."})
	// Volumes counts volume operations by kind and result.
	VolumeOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "blockvault", Name: "volume_operations_total", Help: "Volume manager operations by operation and result.",
	}, []string{"operation", "result"})
)

// Gateway series.
var (
	// HTTPRequests counts the gateway's answered requests by method, route
	// (the OpenAPI path template, e.g. /v3/{project_id}/volumes/{volume_id})
	// and status code.
	HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "blockvault", Name: "http_requests_total", Help: "REST requests answered by the gateway, by method, route and status code.",
	}, []string{"method", "route", "code"})
	// HTTPSeconds is how long the gateway took to answer, by method and route.
	HTTPSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "blockvault", Name: "http_request_duration_seconds", Help: "Time the gateway took to answer REST requests, by method and route.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	}, []string{"method", "route"})
)

// Registry returns a registry with the Go and process collectors and the
// given series.
func Registry(series ...prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.MustRegister(series...)
	return r
}

// BackupSeries are the backup service's series.
func BackupSeries() []prometheus.Collector {
	return []prometheus.Collector{Jobs, JobSeconds, Bytes, Throughput, Running, Queued, TemporaryResources}
}

// VolumeSeries are the volume manager's series.
func VolumeSeries() []prometheus.Collector {
	return []prometheus.Collector{Exports, VolumeOps}
}

// GatewaySeries are the api-gateway's series.
func GatewaySeries() []prometheus.Collector {
	return []prometheus.Collector{HTTPRequests, HTTPSeconds}
}

// Ready is a readiness flag: /readyz answers 200 once Set(true).
type Ready struct{ v atomic.Bool }

// Set marks the daemon ready or not.
func (r *Ready) Set(v bool) { r.v.Store(v) }

// Handler serves /metrics, /healthz (the process is up) and /readyz (it
// serves requests).
func Handler(reg *prometheus.Registry, ready *Ready) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready == nil || !ready.v.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}
