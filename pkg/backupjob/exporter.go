package backupjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/nbd"
)

// NBDExporter is the Exporter of the backup service: each backup is an
// engine.BackupReader (chunks fetched, decrypted and checked as they are
// read, with read-ahead) published read-only on Server under a fresh,
// unguessable export name, which is the export's credential.
type NBDExporter struct {
	Engine *engine.Engine
	Server *nbd.Server
	// Host and Port are what the volume manager dials; TLS says the server
	// requires it.
	Host string
	Port int
	TLS  bool
}

var _ Exporter = (*NBDExporter)(nil)

// Export implements Exporter.
func (x *NBDExporter) Export(ctx context.Context, container, backupID string) (Connection, func(), error) {
	rd, err := x.Engine.OpenBackup(ctx, container, backupID, engine.ReaderOptions{})
	if err != nil {
		return Connection{}, nil, fmt.Errorf("open backup %s for the live restore: %w", backupID, err)
	}
	b := make([]byte, 16)
	rand.Read(b)
	name := "backup-" + hex.EncodeToString(b)
	if err := x.Server.AddExport(name, rd, true); err != nil {
		rd.Close()
		return Connection{}, nil, fmt.Errorf("export backup %s: %w", backupID, err)
	}
	stop := func() {
		x.Server.RemoveExport(name)
		rd.Close()
	}
	return Connection{Type: "nbd", Host: x.Host, Port: x.Port, ExportName: name, TLS: x.TLS}, stop, nil
}
