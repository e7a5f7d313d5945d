package e2etest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/mtls"
	"github.com/blockvault/blockvault/pkg/nbd"
	"github.com/blockvault/blockvault/pkg/testenv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestMutualTLS: with certificates configured, the gateway, the backup
// service and the volume manager talk mutual TLS (a REST call and a forced
// backup go through), the NBD exports require it too (our client, nbdinfo
// and a backup of an in-use volume under write load get through with a
// certificate of the CA), the CLI works with its certificate, and a caller
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
	if b := waitBackup(t, s, field(body, "backup", "id"), testenv.Patience); b.GetStatus() != "available" {
		t.Fatalf("backup: %s %q", b.GetStatus(), b.GetFailReason())
	}
	// The data plane too: an attached volume's export requires TLS with a
	// certificate of the CA; a plaintext client, or one with another CA's
	// certificate, is refused at the handshake.
	v, att, dev := attached(t, s, 256<<20)
	ci := att.GetConnectionInfo()
	if !ci.GetData().GetTls() {
		t.Fatalf("with TLS the export's connection info says tls=false: %v", ci)
	}
	addr := net.JoinHostPort(ci.GetData().GetHost(), strconv.Itoa(int(ci.GetData().GetPort())))
	if c, err := nbd.Dial(context.Background(), "tcp", addr, nbd.DialOptions{ExportName: ci.GetData().GetExportName()}); err == nil {
		c.Close()
		t.Fatal("a plaintext NBD client was served")
	}
	other := MakeCerts(t, filepath.Join(t.TempDir(), "other"))
	otherCfg, err := mtls.ClientConfig(mtls.Files{Cert: other.Cert, Key: other.Key, CA: s.TLS.CA})
	if err != nil {
		t.Fatal(err)
	}
	otherCfg.ServerName = ci.GetData().GetHost()
	if c, err := nbd.Dial(context.Background(), "tcp", addr, nbd.DialOptions{ExportName: ci.GetData().GetExportName(), TLSConfig: otherCfg}); err == nil {
		c.Close()
		t.Fatal("an NBD client with another CA's certificate was served")
	}
	// qemu-img and nbdinfo speak it too (nbds:// with a certificate directory).
	certDir := t.TempDir()
	for src, dst := range map[string]string{s.TLS.CA: "ca-cert.pem", s.TLS.Cert: "client-cert.pem", s.TLS.Key: "client-key.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certDir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	uri := "nbds://" + addr + "/" + ci.GetData().GetExportName() + "?tls-certificates=" + certDir
	if out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(256<<20) {
		t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
	}
	qemu := exec.Command("qemu-img", "info", "--output=json", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+certDir, "--image-opts",
		"driver=nbd,host="+ci.GetData().GetHost()+",port="+strconv.Itoa(int(ci.GetData().GetPort()))+",export="+ci.GetData().GetExportName()+",tls-creds=tls0")
	if out, err := qemu.CombinedOutput(); err != nil || !strings.Contains(string(out), `"virtual-size": `+strconv.Itoa(256<<20)) {
		t.Fatalf("qemu-img over TLS: %v\n%s", err, out)
	}
	// A forced backup of the in-use volume reads its snapshot over TLS
	// while a writer writes over TLS; the restore is a point in time.
	w := startWriter(dev)
	w.waitRounds(t, 1)
	cr, err := s.Backups.CreateBackup(context.Background(), &backupv1.CreateBackupRequest{ProjectId: project, Backup: &backupv1.BackupInput{VolumeId: v.GetId(), Force: true}})
	if err != nil {
		t.Fatal(err)
	}
	b := waitBackup(t, s, cr.GetBackup().GetId(), testenv.Patience)
	w.halt()
	if b.GetStatus() != "available" || b.GetStrategy() != "attached-snapshot" || w.errs.Load() != 0 {
		t.Fatalf("backup of the in-use volume over TLS: %s %q strategy %s, writer errors %d", b.GetStatus(), b.GetFailReason(), b.GetStrategy(), w.errs.Load())
	}
	restoreAndCheck(t, s, b.GetId())

	// The CLI with the certificate.
	cli := exec.Command(filepath.Join(Binaries(t), "blockvault"), "--volume-manager", s.VolumeManager.Addr, "--project", project, "volume", "list")
	cli.Env = append(os.Environ(), "BLOCKVAULT_TLS_CERT="+s.TLS.Cert, "BLOCKVAULT_TLS_KEY="+s.TLS.Key, "BLOCKVAULT_TLS_CA="+s.TLS.CA)
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), vol) {
		t.Fatalf("CLI over mTLS: %v\n%s", err, out)
	}
	// Callers that are refused: plaintext, and TLS with another CA's cert.
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
