// Package vmtest runs a real volume manager in process for tests: SQLite,
// the file driver, an NBD server on 127.0.0.1, and a gRPC client over
// bufconn.
package vmtest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
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
	// Dir holds the database, the pool and the live restores' state.
	Dir string

	once sync.Once
	stop func()
}

// New starts a volume manager whose file driver has cfg (a pool in a temp
// dir when cfg.Dir is empty); everything stops at cleanup.
func New(t testing.TB, cfg file.Config) *Env {
	t.Helper()
	return Start(t, Options{Driver: cfg})
}

// Options are a volume manager's for Start.
type Options struct {
	// Driver is the file driver's configuration (its pool under Dir when
	// Driver.Dir is empty).
	Driver file.Config
	// Dir holds the database, the pool and the live restores' state (a
	// temp dir when empty). A second volume manager started on the Dir of
	// one stopped is that volume manager restarted.
	Dir string
	// Config, when set, changes the service's configuration before it
	// starts.
	Config func(*volumemanager.Config)
}

// Start starts a volume manager with o; it stops at cleanup, or at Stop.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	ctx := context.Background()
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	var stops []func()
	env := &Env{Dir: dir}
	env.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	t.Cleanup(env.Stop)
	db, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "volume-manager.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	stops = append(stops, func() { store.Close(db) })
	vdb, err := volumedb.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.Driver
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
	stops = append(stops, func() { ns.Shutdown(context.Background()) })
	vc := volumemanager.Config{NodeID: "node-a", ExportHost: "127.0.0.1",
		ExportPort: nbdLn.Addr().(*net.TCPAddr).Port, LiveDir: filepath.Join(dir, "live")}
	if o.Config != nil {
		o.Config(&vc)
	}
	srv := volumemanager.New(vc, vdb, drv, ns, nil)
	if err := srv.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	stops = append(stops, srv.Close)
	conn, stopGRPC := serve(t, func(s *grpc.Server) {
		volumev1.RegisterVolumeManagerServiceServer(s, srv)
		volumev1.RegisterVolumeManagerInternalServiceServer(s, srv)
	})
	stops = append(stops, stopGRPC)
	env.Conn, env.Client, env.Internal = conn, volumev1.NewVolumeManagerServiceClient(conn), volumev1.NewVolumeManagerInternalServiceClient(conn)
	env.Server, env.Pool, env.NBD = srv, cfg.Dir, nbdLn.Addr().String()
	return env
}

// Stop stops the volume manager (as a shutdown does: its exports are
// removed, the fills stopped with their state kept); Stop again does
// nothing.
func (e *Env) Stop() { e.once.Do(e.stop) }

// Serve runs services registered by register on a daemon gRPC server (no
// authentication) over bufconn and returns a client connection to it.
func Serve(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	conn, stop := serve(t, register)
	t.Cleanup(stop)
	return conn
}

func serve(t testing.TB, register func(*grpc.Server)) (*grpc.ClientConn, func()) {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	gs := daemon.NewGRPCServer(slog.New(slog.DiscardHandler), daemon.Auth{})
	register(gs.Server)
	go gs.Serve(ln)
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return ln.DialContext(ctx)
	}), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		gs.Stop()
		t.Fatal(err)
	}
	return conn, func() { conn.Close(); gs.Stop() }
}
