// Package volumemanager is the volume manager's gRPC service: it validates
// requests, keeps the volume manager's tables, drives the storage backend
// (a volume.Driver) and publishes volumes and snapshots as NBD exports.
package volumemanager

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/metrics"
	"github.com/blockvault/blockvault/pkg/quota"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/volume"
)

// Exporter publishes block devices to the network (the NBD server).
type Exporter interface {
	AddExport(name string, dev blockdev.Device, readOnly bool) error
	RemoveExport(name string) error
}

// Config is what the service needs to know about where it runs.
type Config struct {
	// NodeID names this node; a consumer on the same node may get a local path.
	NodeID string
	// ExportHost and ExportPort are what consumers dial to reach NBD exports.
	ExportHost string
	ExportPort int
	// ExportTLS says exports require TLS.
	ExportTLS bool
	// Quotas limits each project's volumes, gigabytes and snapshots (nil:
	// no limits).
	Quotas *quota.Quotas

	// LiveDir holds the state files of live restores (<data-dir>/live; ""
	// refuses live restores).
	LiveDir string
	// LiveRegionSize is a new live restore's unit of fill (0: livefill's
	// default, 1 MiB; tests make it small).
	LiveRegionSize int64
	// LiveRetryFor is how long a live fill retries a backup's export that
	// fails or is away before the restore fails for good (0: 10 minutes).
	LiveRetryFor time.Duration
	// LiveFillRate caps each live restore's background fill at this many
	// bytes a second (0: full speed); reads and writes of the volume are
	// not paced.
	LiveFillRate int64
	// LiveProgressEvery is how often a fill's progress is written to the
	// volume's row (0: 5 s; the view shows the live progress anyway).
	LiveProgressEvery time.Duration
	// SourceTLS is the client TLS configuration for a backup's export that
	// requires TLS (nil: only plaintext exports can be restored live).
	SourceTLS *tls.Config
}

// Server implements VolumeManagerService and VolumeManagerInternalService.
type Server struct {
	volumev1.UnimplementedVolumeManagerServiceServer
	volumev1.UnimplementedVolumeManagerInternalServiceServer

	cfg      Config
	db       *volumedb.Store
	driver   volume.Driver
	exporter Exporter
	log      *slog.Logger

	mu      sync.Mutex
	devices map[string]blockdev.Device // open devices by export name

	// Live restores (live.go).
	liveStartMu sync.Mutex // one StartLiveRestore at a time
	liveMu      sync.Mutex
	lives       map[string]*liveFill // by volume id
	broken      map[string]error     // volumes whose live restore could not resume
	liveCtx     context.Context
	liveStop    context.CancelFunc
	liveWG      sync.WaitGroup
}

// New returns a Server. Call Restore before serving to publish the exports
// recorded in the database again.
func New(cfg Config, db *volumedb.Store, driver volume.Driver, exporter Exporter, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	liveCtx, liveStop := context.WithCancel(context.Background())
	return &Server{cfg: cfg, db: db, driver: driver, exporter: exporter, log: log, devices: map[string]blockdev.Device{},
		lives: map[string]*liveFill{}, broken: map[string]error{}, liveCtx: liveCtx, liveStop: liveStop}
}

// checkQuota refuses a new volume (volumes = 1) or snapshot (snapshots = 1)
// of project adding gib gigabytes when it would pass the project's quota.
// It returns with the project's quota lock held; call the func to release
// it once the new row is in (or the request failed).
func (s *Server) checkQuota(ctx context.Context, project string, volumes, snapshots, gib int64) (func(), error) {
	q := s.cfg.Quotas
	if q == nil || q.Unlimited(project, quota.Volumes, quota.Gigabytes, quota.Snapshots) {
		return func() {}, nil
	}
	unlock := q.Lock(project)
	u, err := s.db.ProjectUsage(ctx, project)
	if err == nil && volumes > 0 {
		err = q.CheckCount(project, quota.Volumes, u.Volumes)
	}
	if err == nil && snapshots > 0 {
		err = q.CheckCount(project, quota.Snapshots, u.Snapshots)
	}
	if err == nil {
		err = q.CheckGigabytes(project, quota.Gigabytes, quota.GiB(u.VolumeBytes+u.SnapshotBytes), gib)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// Restore resumes the live restores recorded in the database and
// publishes again every export recorded there (after a restart), those of
// live volumes through their fill, and drops those whose data is gone. An
// export asked with direct_io comes back buffered (the flag is not
// recorded): the same data, only through the page cache.
func (s *Server) Restore(ctx context.Context) error {
	if err := s.resumeLive(ctx); err != nil {
		return err
	}
	exports, err := s.db.ListExports(ctx)
	if err != nil {
		return err
	}
	for _, e := range exports {
		dev, err := s.openForExport(ctx, e.VolumeID, e.SnapshotID, e.ReadOnly)
		if err == nil {
			err = s.publish(e.Name, dev, e.ReadOnly)
		}
		if err != nil {
			s.log.Warn("dropping export that cannot be served again", "volume_id", e.VolumeID, "snapshot_id", e.SnapshotID, "err", err)
			s.db.DeleteExport(ctx, e.Name)
			continue
		}
		s.log.Info("export served again", "volume_id", e.VolumeID, "snapshot_id", e.SnapshotID, "read_only", e.ReadOnly)
	}
	return nil
}

// Close removes every export this process serves (the rows stay, so the
// next start serves them again) and stops the live restores' fills (their
// state stays, so the next start resumes them).
func (s *Server) Close() {
	defer s.stopLive()
	s.mu.Lock()
	names := make([]string, 0, len(s.devices))
	for n := range s.devices {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		s.unpublish(n)
	}
}

// ExportCount is the number of exports served now (for metrics).
func (s *Server) ExportCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.devices)
}

func (s *Server) openForExport(ctx context.Context, volumeID, snapshotID string, readOnly bool) (blockdev.Device, error) {
	if snapshotID == "" {
		return s.openVolume(ctx, volumeID, readOnly, false)
	}
	op, ok := s.driver.(volume.SnapshotOpener)
	if !ok || !s.driver.Capabilities().SnapshotExport {
		return nil, fmt.Errorf("driver %s cannot attach snapshots: %w", s.driver.Name(), volume.ErrUnsupported)
	}
	return op.OpenSnapshot(ctx, volumeID, snapshotID)
}

// openVolume opens volume id for an export: through its fill while a live
// restore fills it, else the driver's volume (bulk: around the page cache,
// for a bulk writer, where the driver can).
func (s *Server) openVolume(ctx context.Context, id string, readOnly, bulk bool) (blockdev.Device, error) {
	if dev, err := s.liveExportOf(id, readOnly); dev != nil || err != nil {
		return dev, err
	}
	if bo, ok := s.driver.(volume.BulkOpener); ok && !readOnly && bulk {
		return bo.OpenVolumeForBulkWrites(ctx, id)
	}
	return s.driver.OpenVolume(ctx, id, readOnly)
}

func (s *Server) publish(name string, dev blockdev.Device, readOnly bool) error {
	if err := s.exporter.AddExport(name, dev, readOnly); err != nil {
		dev.Close()
		return fmt.Errorf("publish export: %w", err)
	}
	s.mu.Lock()
	s.devices[name] = dev
	metrics.Exports.Set(float64(len(s.devices)))
	s.mu.Unlock()
	return nil
}

func (s *Server) unpublish(name string) {
	if err := s.exporter.RemoveExport(name); err != nil {
		s.log.Warn("remove export", "err", err)
	}
	s.mu.Lock()
	dev := s.devices[name]
	delete(s.devices, name)
	metrics.Exports.Set(float64(len(s.devices)))
	s.mu.Unlock()
	if dev != nil {
		dev.Close()
	}
}

// newExportName returns an unguessable export name (128 random bits): the
// name is the credential of an export.
func newExportName() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}
