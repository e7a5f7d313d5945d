package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/nbd"
)

const (
	demoBlocks    = 256
	demoBlockSize = 1 << 20
)

func dialConnection(ctx context.Context, ci *volumev1.ConnectionInfo) (*nbd.Client, error) {
	d := ci.GetData()
	return nbd.Dial(ctx, "tcp", net.JoinHostPort(d.GetHost(), strconv.Itoa(int(d.GetPort()))), nbd.DialOptions{ExportName: d.GetExportName()})
}

// demoWriteAndBackup keeps a writer writing rounds to the attached volume
// over NBD (round r writes r into every block, in order), takes a forced
// backup while it writes, restores the backup into a new volume, verifies
// it, and checks the restored volume is one point in time of the writer.
func demoWriteAndBackup(ctx context.Context, g *globals, st *stack, vol *volumev1.Volume, att *volumev1.Attachment) error {
	step := func(format string, args ...any) { fmt.Fprintf(stdout, "\n== "+format+"\n", args...) }
	dev, err := dialConnection(ctx, att.GetConnectionInfo())
	if err != nil {
		return err
	}
	defer dev.Close()

	step("Start a writer on the attached volume: round r writes byte r into each of %d blocks of 1 MiB, in order, without pause", demoBlocks)
	var stop atomic.Bool
	var rounds, writeErrors atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, demoBlockSize)
		for r := 1; !stop.Load(); r++ {
			for i := range buf {
				buf[i] = byte(r)
			}
			for b := 0; b < demoBlocks && !stop.Load(); b++ {
				if _, err := dev.WriteAt(buf, int64(b)*demoBlockSize); err != nil {
					writeErrors.Add(1)
				}
			}
			rounds.Store(int64(r))
		}
	}()
	// The backup starts once the writer has written every block at least
	// once (round 1 done), however long that takes on this machine.
	for started := time.Now(); rounds.Load() < 1 && writeErrors.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(started) > startTimeout {
			stop.Store(true)
			wg.Wait()
			return fmt.Errorf("the writer did not finish its first round of %d blocks within %v", demoBlocks, startTimeout)
		}
	}

	bc, done, err := g.backups()
	if err != nil {
		return err
	}
	defer done()
	step("Back up the in-use volume while it is written (force): backup create %s --force --wait", vol.GetId())
	cr, err := bc.CreateBackup(ctx, &backupv1.CreateBackupRequest{ProjectId: g.project, Backup: &backupv1.BackupInput{
		VolumeId: vol.GetId(), Name: "quickstart-backup", Force: true}})
	if err != nil {
		stop.Store(true)
		wg.Wait()
		return err
	}
	werr := g.watch(ctx, bc, cr.GetBackup().GetId())
	stop.Store(true)
	wg.Wait()
	if werr != nil {
		return werr
	}
	b, err := bc.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: g.project, BackupId: cr.GetBackup().GetId()})
	if err != nil {
		return err
	}
	fields(stdout, "writer rounds completed", strconv.FormatInt(rounds.Load(), 10), "writer errors", strconv.FormatInt(writeErrors.Load(), 10),
		"backup strategy", b.GetBackup().GetStrategy(), "chunks stored", strconv.Itoa(int(b.GetBackup().GetObjectCount())))
	if writeErrors.Load() > 0 {
		return fmt.Errorf("the writer saw %d errors during the backup", writeErrors.Load())
	}
	vc, vdone, err := g.volumes()
	if err != nil {
		return err
	}
	defer vdone()
	v, _ := vc.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: g.project, VolumeId: vol.GetId()})
	fmt.Fprintf(stdout, "  the volume is %s again, still attached; temporary snapshots left: %d\n", v.GetVolume().GetStatus(), countTemporary(ctx, g, vc))

	step("Verify the backup: every chunk re-read and checked")
	vr, err := bc.VerifyBackup(ctx, &backupv1.VerifyBackupRequest{ProjectId: g.project, BackupId: b.GetBackup().GetId()})
	if err != nil {
		return err
	}
	fields(stdout, "ok", strconv.FormatBool(vr.GetOk()), "chunks checked", strconv.FormatInt(vr.GetChunksChecked(), 10))
	if !vr.GetOk() {
		return fmt.Errorf("verify found %d damaged chunks", len(vr.GetDamaged()))
	}

	step("Restore it into a new volume: backup restore %s --wait", b.GetBackup().GetId())
	rr, err := bc.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: g.project, BackupId: b.GetBackup().GetId(),
		Restore: &backupv1.RestoreInput{Name: "quickstart-restored"}})
	if err != nil {
		return err
	}
	if err := g.watch(ctx, bc, b.GetBackup().GetId()); err != nil {
		return err
	}
	restored := rr.GetRestore().GetVolumeId()

	step("Check the restored volume is one point in time of the writer")
	ra, err := vc.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: g.project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: restored, InstanceUuid: "quickstart-check", Mode: "ro", Connector: &volumev1.Connector{Host: "quickstart"}}})
	if err != nil {
		return err
	}
	rdev, err := dialConnection(ctx, ra.GetAttachment().GetConnectionInfo())
	if err != nil {
		return err
	}
	first, boundary, perr := checkPointInTime(rdev)
	rdev.Close()
	vc.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: g.project, AttachmentId: ra.GetAttachment().GetId()})
	if perr != nil {
		return perr
	}
	if boundary < 0 {
		fmt.Fprintf(stdout, "  all %d blocks hold round %d: a consistent point in time\n", demoBlocks, first)
	} else {
		fmt.Fprintf(stdout, "  blocks 0..%d hold round %d and blocks %d..%d round %d: the writer's state at one instant\n",
			boundary-1, first, boundary, demoBlocks-1, first-1)
	}
	if _, err := vc.DeleteVolume(ctx, &volumev1.DeleteVolumeRequest{ProjectId: g.project, VolumeId: restored}); err != nil {
		return err
	}
	return nil
}

// checkPointInTime reads the demo blocks: a prefix at round r+1, the rest
// at round r, each block whole.
func checkPointInTime(dev *nbd.Client) (first byte, boundary int, err error) {
	buf := make([]byte, demoBlockSize)
	boundary = -1
	for b := 0; b < demoBlocks; b++ {
		if _, err := dev.ReadAt(buf, int64(b)*demoBlockSize); err != nil {
			return 0, 0, err
		}
		v := buf[0]
		if !bytes.Equal(buf, bytes.Repeat([]byte{v}, demoBlockSize)) {
			return 0, 0, fmt.Errorf("block %d of the restored volume is torn", b)
		}
		switch {
		case b == 0:
			first = v
		case v == first && boundary < 0:
		case v == first-1 && boundary < 0:
			boundary = b
		case v == first-1 && boundary >= 0:
		default:
			return 0, 0, fmt.Errorf("block %d holds round %d after round %d at block 0: not a point in time", b, v, first)
		}
	}
	return first, boundary, nil
}

func countTemporary(ctx context.Context, g *globals, vc volumev1.VolumeManagerServiceClient) int {
	r, err := vc.ListSnapshots(ctx, &volumev1.ListSnapshotsRequest{ProjectId: g.project, IncludeTemporary: true})
	if err != nil {
		return -1
	}
	n := 0
	for _, s := range r.GetSnapshots() {
		if s.GetTemporary() {
			n++
		}
	}
	return n
}
