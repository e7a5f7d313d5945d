// Package vmtest runs a real volume manager in process for tests: SQLite,
// the file driver, an NBD server on 127.0.0.1, and a gRPC client over
// bufconn.
package vmtest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/daemon"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/store"
	"github.com/blockvault/blockvault/pkg/store/volumedb"
	"github.com/blockvault/blockvault/pkg/volume/file"
	"github.com/blockvault/blockvault/services/volumemanager"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Env is a running in-process volume manager.
type Env struct {
	Conn   *grpc.ClientConn
	Client volumev1.VolumeManagerServiceClient
	// Internal is a client of VolumeManagerInternalService.
	Internal volumev1.VolumeManagerInternalServiceClient
	Server   *volumemanager.Server
	// Pool is the file driver's directory; NBD the NBD server's address.
	Pool, NBD string
}

// New starts a volume manager whose file driver has cfg (a pool in a temp
// dir when cfg.Dir is empty); everything stops at cleanup.
func New(t testing.TB, cfg file.Config) *Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "volume-manager.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(db) })
	vdb, err := volumedb.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(dir, "pool")
	}
	drv, err := file.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nbdLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ns := nbd.NewServer(nbd.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	go ns.Serve(nbdLn)
	t.Cleanup(func() { ns.Shutdown(context.Background()) })
	srv := volumemanager.New(volumemanager.Config{NodeID: "node-a", ExportHost: "127.0.0.1",
		ExportPort: nbdLn.Addr().(*net.TCPAddr).Port}, vdb, drv, ns, nil)
	t.Cleanup(srv.Close)
	conn := Serve(t, func(s *grpc.Server) {
		volumev1.RegisterVolumeManagerServiceServer(s, srv)
		volumev1.RegisterVolumeManagerInternalServiceServer(s, srv)
	})
	return &Env{Conn: conn, Client: volumev1.NewVolumeManagerServiceClient(conn), Internal: volumev1.NewVolumeManagerInternalServiceClient(conn),
		Server: srv, Pool: cfg.Dir, NBD: nbdLn.Addr().String()}
}

// Serve runs services registered by register on a daemon gRPC server (no
// authentication) over bufconn and returns a client connection to it.
func Serve(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	gs := daemon.NewGRPCServer(slog.New(slog.DiscardHandler), daemon.Auth{})
	register(gs.Server)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return ln.DialContext(ctx)
	}), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
