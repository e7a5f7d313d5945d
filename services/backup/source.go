package backup

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/blockdev"
	"github.com/blockvault/blockvault/pkg/nbd"
)

// reconnectWindow is how long a broken NBD connection is dialed again.
const reconnectWindow = time.Minute

// nbdStallTimeout is how long requests may wait without a byte from the
// volume manager before the connection is taken as broken (and dialed
// again): a hung volume manager must not hold a backup or restore for ever.
// Generous, as a flush of a large target may take a while.
const nbdStallTimeout = 2 * time.Minute

// openConnection opens what the volume manager handed out: a local path
// (same node) or an NBD export (any node).
func openConnection(ctx context.Context, ci *volumev1.ConnectionInfo, readOnly bool, tlsCfg *tls.Config) (blockdev.Device, error) {
	d := ci.GetData()
	switch ci.GetDriverVolumeType() {
	case "local":
		// Read-write is a restore's target: its whole-chunk writes go
		// around the page cache.
		var dev *blockdev.File
		var err error
		if readOnly {
			dev, err = blockdev.OpenFile(d.GetDevicePath(), true)
		} else {
			dev, err = blockdev.OpenFileForBulkWrites(d.GetDevicePath())
		}
		if err != nil {
			return nil, fmt.Errorf("open local path: %w", err)
		}
		return dev, nil
	case "nbd":
		opts := nbd.DialOptions{ExportName: d.GetExportName(), StallTimeout: nbdStallTimeout}
		if d.GetTls() {
			if tlsCfg == nil {
				return nil, fmt.Errorf("the export requires TLS; give the backup service --tls-cert, --tls-key and --tls-ca")
			}
			opts.TLSConfig = tlsCfg.Clone()
			opts.TLSConfig.ServerName = d.GetHost()
		}
		addr := net.JoinHostPort(d.GetHost(), strconv.Itoa(int(d.GetPort())))
		// A dropped connection is dialed again and the failed requests
		// retried, for up to reconnectWindow (a volume manager restarting
		// brings its exports back under the same names).
		c, err := nbd.DialReconnecting(ctx, "tcp", addr, opts, reconnectWindow)
		if err != nil {
			return nil, fmt.Errorf("connect to the NBD export at %s: %w", addr, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("unknown connection type %q", ci.GetDriverVolumeType())
}
