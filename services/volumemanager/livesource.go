package volumemanager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
)

const (
	// liveReconnectWindow is how long a dropped connection to the backup's
	// export is dialed again before the requests on it fail (a read of the
	// consumer's then gets an NBD error; the fill retries for
	// Config.LiveRetryFor).
	liveReconnectWindow = 10 * time.Second
	// liveStallTimeout breaks a connection to a backup service that hangs.
	liveStallTimeout = 30 * time.Second
	// liveDialTimeout bounds one dial of the backup's export.
	liveDialTimeout = 10 * time.Second
)

// errSourceDown is why a read of what is not filled yet fails while the
// backup's export cannot be reached.
var errSourceDown = errors.New("the backup's export is not connected")

// errSourceClosed: the live restore stopped here (shutdown, delete).
var errSourceClosed = errors.New("the live restore's source is closed")

// liveSource is a live fill's source: the backup service's read-only NBD
// export of the backup. It can be pointed at another export (swap: the
// backup service restarted and exports the backup anew) and can be without
// a connection for a while (after a restart of the volume manager, with the
// backup service away): a dialer then keeps trying in the background and
// reads fail meanwhile, so the export of the volume stays up and only the
// requests that need the backup fail. Its size is the backup's, known
// without a connection.
type liveSource struct {
	size int64
	tls  *tls.Config
	log  *slog.Logger
	stop chan struct{} // closed by Close: the dialer stops

	mu     sync.Mutex
	dev    blockdev.Device // the connection, nil while there is none
	down   error           // why there is none
	gen    int             // bumped by every swap: a dial for an older one is dropped
	closed bool
	wg     sync.WaitGroup
}

var _ blockdev.Device = (*liveSource)(nil)

func newLiveSource(size int64, tlsConfig *tls.Config, log *slog.Logger) *liveSource {
	return &liveSource{size: size, tls: tlsConfig, log: log, stop: make(chan struct{}), down: errSourceDown}
}

// dialSource connects to the export info names, which must have size bytes.
func dialSource(ctx context.Context, info *volumev1.ConnectionInfo, size int64, tlsConfig *tls.Config) (blockdev.Device, error) {
	d := info.GetData()
	opts := nbd.DialOptions{ExportName: d.GetExportName(), StallTimeout: liveStallTimeout}
	if d.GetTls() {
		if tlsConfig == nil {
			return nil, fmt.Errorf("the backup's export requires TLS; give the volume manager --tls-cert, --tls-key and --tls-ca")
		}
		opts.TLSConfig = tlsConfig.Clone()
		opts.TLSConfig.ServerName = d.GetHost()
	}
	addr := net.JoinHostPort(d.GetHost(), strconv.Itoa(int(d.GetPort())))
	ctx, cancel := context.WithTimeout(ctx, liveDialTimeout)
	defer cancel()
	dev, err := nbd.DialReconnecting(ctx, "tcp", addr, opts, liveReconnectWindow)
	if err != nil {
		return nil, fmt.Errorf("connect to the backup's export at %s: %w", addr, err)
	}
	if dev.Size() != size {
		dev.Close()
		return nil, fmt.Errorf("the backup's export at %s has %d bytes, not the backup's %d", addr, dev.Size(), size)
	}
	return dev, nil
}

// use makes dev (connected already) the source, closing the one before.
func (s *liveSource) use(dev blockdev.Device) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		dev.Close()
		return
	}
	old := s.dev
	s.dev, s.down = dev, nil
	s.gen++
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// connectLater points the source at info and dials it in the background,
// again and again, until it answers (or the source is swapped or closed).
func (s *liveSource) connectLater(info *volumev1.ConnectionInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.gen++
	gen := s.gen
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		delay := time.Second
		for {
			dev, err := dialSource(context.Background(), info, s.size, s.tls)
			s.mu.Lock()
			if s.closed || s.gen != gen {
				s.mu.Unlock()
				if dev != nil {
					dev.Close()
				}
				return
			}
			if err == nil {
				s.dev, s.down = dev, nil
				s.mu.Unlock()
				s.log.Info("live restore: connected to the backup's export", "host", info.GetData().GetHost(), "port", info.GetData().GetPort())
				return
			}
			s.down = fmt.Errorf("%w: %w", errSourceDown, err)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 15*time.Second)
		}
	}()
}

// fail disconnects the source for good: every read fails with reason.
func (s *liveSource) fail(reason error) {
	s.mu.Lock()
	old := s.dev
	s.dev, s.down = nil, reason
	s.gen++
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

func (s *liveSource) current() (blockdev.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errSourceClosed
	}
	if s.dev == nil {
		return nil, s.down
	}
	return s.dev, nil
}

// ReadAt implements blockdev.Device.
func (s *liveSource) ReadAt(p []byte, off int64) (int, error) {
	dev, err := s.current()
	if err != nil {
		return 0, err
	}
	return dev.ReadAt(p, off)
}

// Extents implements blockdev.Device.
func (s *liveSource) Extents(off, length int64) ([]blockdev.Extent, error) {
	dev, err := s.current()
	if err != nil {
		return nil, err
	}
	return dev.Extents(off, length)
}

// WriteAt implements blockdev.Device: the backup is read-only.
func (s *liveSource) WriteAt([]byte, int64) (int, error) { return 0, blockdev.ErrReadOnly }

// Zero implements blockdev.Device: the backup is read-only.
func (s *liveSource) Zero(int64, int64) error { return blockdev.ErrReadOnly }

// Trim implements blockdev.Device: the backup is read-only.
func (s *liveSource) Trim(int64, int64) error { return blockdev.ErrReadOnly }

// Flush implements blockdev.Device: nothing to flush.
func (s *liveSource) Flush() error { return nil }

// Size implements blockdev.Device: the backup's size.
func (s *liveSource) Size() int64 { return s.size }

// ReadOnly implements blockdev.Device.
func (s *liveSource) ReadOnly() bool { return true }

// Close implements blockdev.Device: the connection closes, the dialer stops.
func (s *liveSource) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	old := s.dev
	s.dev = nil
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	if old != nil {
		return old.Close()
	}
	return nil
}
