package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/lifecycle"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
)

func backupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Back up volumes (attached or not), restore, verify, export and import backups"}

	var name, description, container, snapshotID string
	var force, incremental, wait bool
	create := &cobra.Command{
		Use:   "create VOLUME_ID",
		Short: "Back up a volume; --force for an in-use volume, --wait to follow it to the end",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.CreateBackup(cmd.Context(), &backupv1.CreateBackupRequest{ProjectId: g.project, Backup: &backupv1.BackupInput{
				VolumeId: args[0], Name: name, Description: description, Container: container, Force: force,
				Incremental: incremental, SnapshotId: snapshotID}})
			if err != nil {
				return err
			}
			if !wait {
				return g.showBackup(r.GetBackup())
			}
			return g.watch(cmd.Context(), c, r.GetBackup().GetId())
		},
	}
	create.Flags().StringVar(&name, "name", "", "name")
	create.Flags().StringVar(&description, "description", "", "description")
	create.Flags().StringVar(&container, "container", "", "repository container (default: the service's)")
	create.Flags().StringVar(&snapshotID, "snapshot", "", "back up this snapshot of the volume")
	create.Flags().BoolVar(&force, "force", false, "back up an in-use volume (from a temporary snapshot or clone)")
	create.Flags().BoolVar(&incremental, "incremental", false, "store only what changed since the volume's last backup")
	create.Flags().BoolVar(&wait, "wait", false, "show progress until the backup ends")

	list := &cobra.Command{
		Use:   "list",
		Short: "List backups, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ListBackups(cmd.Context(), &backupv1.ListBackupsRequest{ProjectId: g.project})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(stdout, r)
			}
			var rows [][]string
			for _, b := range r.GetBackups() {
				rows = append(rows, []string{b.GetId(), b.GetVolumeId(), b.GetName(), b.GetStatus(), humanBytes(b.GetSizeBytes()),
					strconv.FormatBool(b.GetIsIncremental()), b.GetCreatedAt()})
			}
			table(stdout, []string{"ID", "VOLUME", "NAME", "STATUS", "SIZE", "INCREMENTAL", "CREATED"}, rows)
			return nil
		},
	}

	show := &cobra.Command{
		Use:   "show BACKUP_ID",
		Short: "Show a backup, with its progress while it runs",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.GetBackup(cmd.Context(), &backupv1.GetBackupRequest{ProjectId: g.project, BackupId: args[0]})
			if err != nil {
				return err
			}
			return g.showBackup(r.GetBackup())
		},
	}

	watch := &cobra.Command{
		Use:   "watch BACKUP_ID",
		Short: "Follow a running backup or restore until it ends",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			return g.watch(cmd.Context(), c, args[0])
		},
	}

	del := &cobra.Command{
		Use:   "delete BACKUP_ID",
		Short: "Delete an available or failed backup",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.DeleteBackup(cmd.Context(), &backupv1.DeleteBackupRequest{ProjectId: g.project, BackupId: args[0]}); err != nil {
				return err
			}
			return g.said(map[string]string{"id": args[0], "status": "deleting"},
				"backup %s: deletion started (status deleting; it is gone from backup list when done)", args[0])
		},
	}

	var restoreVolume, restoreName string
	var restoreWait bool
	restore := &cobra.Command{
		Use:   "restore BACKUP_ID",
		Short: "Restore a backup into a new volume, or into --volume",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.RestoreBackup(cmd.Context(), &backupv1.RestoreBackupRequest{ProjectId: g.project, BackupId: args[0],
				Restore: &backupv1.RestoreInput{VolumeId: restoreVolume, Name: restoreName}})
			if err != nil {
				return err
			}
			if g.output == "json" && !restoreWait {
				return printJSON(stdout, r)
			}
			if g.output == "table" {
				fields(stdout, "backup_id", r.GetRestore().GetBackupId(), "volume_id", r.GetRestore().GetVolumeId(),
					"volume_name", r.GetRestore().GetVolumeName())
			}
			if !restoreWait {
				return nil
			}
			if _, err := g.follow(cmd.Context(), c, args[0]); err != nil {
				return err
			}
			return g.showRestored(cmd.Context(), r.GetRestore())
		},
	}
	restore.Flags().StringVar(&restoreVolume, "volume", "", "an existing available volume to restore into")
	restore.Flags().StringVar(&restoreName, "name", "", "name of the new volume")
	restore.Flags().BoolVar(&restoreWait, "wait", false, "show progress until the restore ends")

	verify := &cobra.Command{
		Use:   "verify BACKUP_ID",
		Short: "Re-read every chunk of a backup and report damage",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.VerifyBackup(cmd.Context(), &backupv1.VerifyBackupRequest{ProjectId: g.project, BackupId: args[0]})
			if err != nil {
				return err
			}
			if g.output == "json" {
				printJSON(stdout, r)
			} else {
				fields(stdout, "ok", strconv.FormatBool(r.GetOk()), "chunks_checked", strconv.FormatInt(r.GetChunksChecked(), 10),
					"damaged", strconv.Itoa(len(r.GetDamaged())))
				for _, d := range r.GetDamaged() {
					fmt.Fprintf(stdout, "  chunk %s at offset %d: %s\n", d.GetChunkId(), d.GetOffset(), d.GetProblem())
				}
			}
			if !r.GetOk() {
				return failedError{fmt.Errorf("backup %s is damaged: %d chunk(s)", args[0], len(r.GetDamaged()))}
			}
			return nil
		},
	}

	export := &cobra.Command{
		Use:   "export BACKUP_ID",
		Short: "Print a backup record another deployment can import",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ExportBackupRecord(cmd.Context(), &backupv1.ExportBackupRecordRequest{ProjectId: g.project, BackupId: args[0]})
			if err != nil {
				return err
			}
			return printJSON(stdout, r.GetBackupRecord())
		},
	}

	importCmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Register a backup from a record printed by export",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return usageError{err}
			}
			rec := &backupv1.BackupRecord{}
			if err := (jsonIn).Unmarshal(data, rec); err != nil {
				return usageError{fmt.Errorf("backup record: %w", err)}
			}
			c, done, err := g.backups()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ImportBackupRecord(cmd.Context(), &backupv1.ImportBackupRecordRequest{ProjectId: g.project, BackupRecord: rec})
			if err != nil {
				return err
			}
			return g.showBackup(r.GetBackup())
		},
	}
	cmd.AddCommand(create, list, show, watch, del, restore, verify, export, importCmd)
	return cmd
}

func (g *globals) showBackup(b *backupv1.Backup) error {
	if g.output == "json" {
		return printJSON(stdout, b)
	}
	fields(stdout, "id", b.GetId(), "volume_id", b.GetVolumeId(), "name", b.GetName(), "status", b.GetStatus(),
		"size", humanBytes(b.GetSizeBytes()), "incremental", strconv.FormatBool(b.GetIsIncremental()),
		"strategy", b.GetStrategy(), "object_count", strconv.Itoa(int(b.GetObjectCount())),
		"fail_reason", b.GetFailReason(), "created_at", b.GetCreatedAt())
	if p := b.GetProgress(); p != nil {
		fmt.Fprintln(stdout, progressLine(b.GetStatus(), p))
	}
	return nil
}

// watch follows a backup until it reaches a steady status, drawing progress;
// a backup that ends in error makes the command fail with exit code 4.
func (g *globals) watch(ctx context.Context, c backupv1.BackupServiceClient, id string) error {
	last, err := g.follow(ctx, c, id)
	if err != nil {
		return err
	}
	if g.output == "table" {
		fields(stdout, "id", last.GetId(), "status", last.GetStatus(), "fail_reason", last.GetFailReason())
	}
	if last.GetStatus() == "error" {
		return failedError{fmt.Errorf("backup %s failed: %s", id, last.GetFailReason())}
	}
	return nil
}

// follow draws a backup's progress until it reaches a steady status, and
// returns it as it was then.
func (g *globals) follow(ctx context.Context, c backupv1.BackupServiceClient, id string) (*backupv1.Backup, error) {
	stream, err := c.WatchBackup(ctx, &backupv1.WatchBackupRequest{ProjectId: g.project, BackupId: id})
	if err != nil {
		return nil, err
	}
	p := newProgressPrinter(g)
	var last *backupv1.Backup
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.finish()
			return nil, err
		}
		last = r.GetBackup()
		p.update(last)
	}
	p.finish()
	if last == nil {
		return nil, fmt.Errorf("backup %s: the watch ended without news", id)
	}
	return last, nil
}

// showRestored prints, at the end of a waited-for restore, the volume the
// data went to (the last JSON line with --output json: {"restore": ...,
// "volume": ...}); a restore that failed (the volume is error_restoring)
// makes the command fail with exit code 4.
func (g *globals) showRestored(ctx context.Context, res *backupv1.RestoreResult) error {
	vc, done, err := g.volumes()
	if err != nil {
		return err
	}
	defer done()
	r, err := vc.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: g.project, VolumeId: res.GetVolumeId()})
	if err != nil {
		return fmt.Errorf("the restore of backup %s ended; volume %s: %w", res.GetBackupId(), res.GetVolumeId(), err)
	}
	v := r.GetVolume()
	if g.output == "json" {
		if err := printJSONObject(stdout, map[string]proto.Message{"restore": res, "volume": v}); err != nil {
			return err
		}
	} else {
		if v.GetStatus() == lifecycle.VolumeErrorRestoring {
			fmt.Fprintf(stdout, "the restore of backup %s into volume %s (%s) failed\n", res.GetBackupId(), v.GetId(), v.GetName())
		} else {
			fmt.Fprintf(stdout, "backup %s restored into volume %s (%s)\n", res.GetBackupId(), v.GetId(), v.GetName())
		}
		fields(stdout, "volume_id", v.GetId(), "volume_name", v.GetName(), "volume_status", v.GetStatus(),
			"volume_size", humanBytes(v.GetSizeBytes()), "fail_reason", v.GetFailReason())
	}
	if v.GetStatus() == lifecycle.VolumeErrorRestoring {
		return failedError{fmt.Errorf("volume %s is %s: %s", v.GetId(), v.GetStatus(), v.GetFailReason())}
	}
	return nil
}
