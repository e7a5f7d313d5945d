package e2etest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/mtls"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestMutualTLS: with certificates configured, the gateway, the backup
// service and the volume manager talk mutual TLS (a REST call and a forced
// backup go through), the CLI works with its certificate, and a caller
// without a certificate of the CA gets nothing.
func TestMutualTLS(t *testing.T) {
	s := Start(t, Options{TLS: true})
	// REST through the gateway (gateway -> volume manager over mTLS).
	code, body := s.REST("POST", "/v3/"+project+"/volumes", map[string]any{"volume": map[string]any{"size": 1}})
	if code != 202 {
		t.Fatalf("create over the gateway: %d %v", code, body)
	}
	vol := field(body, "volume", "id")
	// A backup (gateway -> backup service -> volume manager, all mTLS).
	code, body = s.REST("POST", "/v3/"+project+"/backups", map[string]any{"backup": map[string]any{"volume_id": vol}})
	if code != 202 {
		t.Fatalf("backup over the gateway: %d %v", code, body)
	}
	if b := waitBackup(t, s, field(body, "backup", "id"), time.Minute); b.GetStatus() != "available" {
		t.Fatalf("backup: %s %q", b.GetStatus(), b.GetFailReason())
	}
	// The CLI with the certificate.
	cli := exec.Command(filepath.Join(Binaries(t), "blockvault"), "--volume-manager", s.VolumeManager.Addr, "--project", project, "volume", "list")
	cli.Env = append(os.Environ(), "BLOCKVAULT_TLS_CERT="+s.TLS.Cert, "BLOCKVAULT_TLS_KEY="+s.TLS.Key, "BLOCKVAULT_TLS_CA="+s.TLS.CA)
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), vol) {
		t.Fatalf("CLI over mTLS: %v\n%s", err, out)
	}
	// Callers that are refused: plaintext, and TLS with another CA's cert.
	other := MakeCerts(t, filepath.Join(t.TempDir(), "other"))
	foreign, err := mtls.DialOption(mtls.Files{Cert: other.Cert, Key: other.Key, CA: s.TLS.CA})
	if err != nil {
		t.Fatal(err)
	}
	for name, opt := range map[string]grpc.DialOption{
		"plaintext":         grpc.WithTransportCredentials(insecure.NewCredentials()),
		"another CA's cert": foreign,
	} {
		c, err := grpc.NewClient(s.VolumeManager.Addr, opt)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = volumev1.NewVolumeManagerServiceClient(c).ListVolumes(ctx, &volumev1.ListVolumesRequest{ProjectId: project})
		cancel()
		c.Close()
		if err == nil {
			t.Errorf("%s: the volume manager answered", name)
		}
	}
}
