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
	cmd.AddCommand(backupCreateCmd(g), backupListCmd(g), backupShowCmd(g), backupWatchCmd(g), backupDeleteCmd(g),
		backupRestoreCmd(g), backupVerifyCmd(g), backupExportCmd(g), backupImportCmd(g))
	return cmd
}

// withBackups makes a command's RunE that dials the backup service, runs
// fn with its client and hangs up.
func (g *globals) withBackups(fn func(cmd *cobra.Command, args []string, c backupv1.BackupServiceClient) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, done, err := g.backups()
		if err != nil {
			return err
		}
		defer done()
		return fn(cmd, args, c)
	}
}

// backupIDCmd is a subcommand of one BACKUP_ID argument that calls the
// backup service.
func (g *globals) backupIDCmd(verb, short string, fn func(ctx context.Context, c backupv1.BackupServiceClient, id string) error) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " BACKUP_ID",
		Short: short,
		Args:  exactArgs(1),
		RunE: g.withBackups(func(cmd *cobra.Command, args []string, c backupv1.BackupServiceClient) error {
			return fn(cmd.Context(), c, args[0])
		}),
	}
}

func backupCreateCmd(g *globals) *cobra.Command {
	var in backupv1.BackupInput // the flags, then the volume
	var wait bool
	cmd := &cobra.Command{
		Use:   "create VOLUME_ID",
		Short: "Back up a volume; --force for an in-use volume, --wait to follow it to the end",
		Args:  exactArgs(1),
		RunE: g.withBackups(func(cmd *cobra.Command, args []string, c backupv1.BackupServiceClient) error {
			in.VolumeId = args[0]
			r, err := c.CreateBackup(cmd.Context(), &backupv1.CreateBackupRequest{ProjectId: g.project, Backup: &in})
			if err != nil {
				return err
			}
			if !wait {
				return g.showBackup(r.GetBackup())
			}
			return g.watch(cmd.Context(), c, r.GetBackup().GetId())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&in.Name, "name", "", "name")
	f.StringVar(&in.Description, "description", "", "description")
	f.StringVar(&in.Container, "container", "", "repository container (default: the service's)")
	f.StringVar(&in.SnapshotId, "snapshot", "", "back up this snapshot of the volume")
	f.BoolVar(&in.Force, "force", false, "back up an in-use volume (from a temporary snapshot or clone)")
	f.BoolVar(&in.Incremental, "incremental", false, "store only what changed since the volume's last backup")
	f.BoolVar(&wait, "wait", false, "show progress until the backup ends")
	return cmd
}

func backupListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List backups, newest first",
		Args:  cobra.NoArgs,
		RunE: g.withBackups(func(cmd *cobra.Command, _ []string, c backupv1.BackupServiceClient) error {
			r, err := c.ListBackups(cmd.Context(), &backupv1.ListBackupsRequest{ProjectId: g.project})
			if err != nil {
				return err
			}
			return g.showBackups(r)
		}),
	}
}

func backupShowCmd(g *globals) *cobra.Command {
	return g.backupIDCmd("show", "Show a backup, with its progress while it runs",
		func(ctx context.Context, c backupv1.BackupServiceClient, id string) error {
			r, err := c.GetBackup(ctx, &backupv1.GetBackupRequest{ProjectId: g.project, BackupId: id})
			if err != nil {
				return err
			}
			return g.showBackup(r.GetBackup())
		})
}

func backupWatchCmd(g *globals) *cobra.Command {
	return g.backupIDCmd("watch", "Follow a running backup or restore until it ends", g.watch)
}

func backupDeleteCmd(g *globals) *cobra.Command {
	return g.backupIDCmd("delete", "Delete an available or failed backup",
		func(ctx context.Context, c backupv1.BackupServiceClient, id string) error {
			if _, err := c.DeleteBackup(ctx, &backupv1.DeleteBackupRequest{ProjectId: g.project, BackupId: id}); err != nil {
				return err
			}
			return g.said(map[string]string{"id": id, "status": "deleting"},
				"backup %s: deletion started (status deleting; it is gone from backup list when done)", id)
		})
}

func backupRestoreCmd(g *globals) *cobra.Command {
	var in backupv1.RestoreInput // the flags
	var wait bool
	cmd := g.backupIDCmd("restore", "Restore a backup into a new volume, or into --volume",
		func(ctx context.Context, c backupv1.BackupServiceClient, id string) error {
			r, err := c.RestoreBackup(ctx, &backupv1.RestoreBackupRequest{ProjectId: g.project, BackupId: id,
				Restore: &in})
			if err != nil {
				return err
			}
			if g.output == "json" && !wait {
				return printJSON(stdout, r)
			}
			if g.output == "table" {
				fields(stdout, "backup_id", r.GetRestore().GetBackupId(), "volume_id", r.GetRestore().GetVolumeId(),
					"volume_name", r.GetRestore().GetVolumeName())
				if in.Live {
					fmt.Fprintln(stdout, "live: the volume is usable now; it fills from the backup in the background")
				}
			}
			if !wait {
				return nil
			}
			if _, err := g.follow(ctx, c, id); err != nil {
				return err
			}
			return g.showRestored(ctx, r.GetRestore())
		})
	f := cmd.Flags()
	f.StringVar(&in.VolumeId, "volume", "", "an existing available volume to restore into")
	f.StringVar(&in.Name, "name", "", "name of the new volume")
	f.BoolVar(&wait, "wait", false, "show progress until the restore ends")
	f.BoolVar(&in.Live, "live", false, "live restore: the new volume is usable (attach it) as soon as this returns, served from the backup while a background fill copies it; --wait follows the fill")
	return cmd
}

func backupVerifyCmd(g *globals) *cobra.Command {
	return g.backupIDCmd("verify", "Re-read every chunk of a backup and report damage",
		func(ctx context.Context, c backupv1.BackupServiceClient, id string) error {
			r, err := c.VerifyBackup(ctx, &backupv1.VerifyBackupRequest{ProjectId: g.project, BackupId: id})
			if err != nil {
				return err
			}
			g.showVerified(r)
			if !r.GetOk() {
				return failedError{fmt.Errorf("backup %s is damaged: %d chunk(s)", id, len(r.GetDamaged()))}
			}
			return nil
		})
}

func backupExportCmd(g *globals) *cobra.Command {
	return g.backupIDCmd("export", "Print a backup record another deployment can import",
		func(ctx context.Context, c backupv1.BackupServiceClient, id string) error {
			r, err := c.ExportBackupRecord(ctx, &backupv1.ExportBackupRecordRequest{ProjectId: g.project, BackupId: id})
			if err != nil {
				return err
			}
			return printJSON(stdout, r.GetBackupRecord())
		})
}

func backupImportCmd(g *globals) *cobra.Command {
	var repository string
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Register a backup from a record printed by export, or from Cinder's export record",
		Long: `Register a backup from its record: one printed by "blockvault backup export",
or one Cinder exported ("openstack volume backup record export -f json ID", or
{"backup_service": ..., "backup_url": ...}) for a backup of Cinder's posix, nfs
or s3 backup driver. A Cinder backup stays where Cinder wrote it: --repository
names that place (a directory, or s3://host:port), unless the backup service
was started with --cinder-repository. Import a parent before its incrementals.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := readBackupRecord(args[0])
			if err != nil {
				return err
			}
			return g.withBackups(func(cmd *cobra.Command, _ []string, c backupv1.BackupServiceClient) error {
				r, err := c.ImportBackupRecord(cmd.Context(), &backupv1.ImportBackupRecordRequest{ProjectId: g.project, BackupRecord: rec,
					Repository: repository})
				if err != nil {
					return err
				}
				return g.showBackup(r.GetBackup())
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&repository, "repository", "", "for a Cinder record: where Cinder wrote the backup, a directory (backup_posix_path, or the NFS share mounted) or s3://host:port (s3s:// for TLS)")
	return cmd
}

// readBackupRecord reads a record printed by export from a file, or from
// the standard input for "-".
func readBackupRecord(path string) (*backupv1.BackupRecord, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usageError{err}
	}
	rec := &backupv1.BackupRecord{}
	if err := (jsonIn).Unmarshal(data, rec); err != nil {
		return nil, usageError{fmt.Errorf("backup record: %w", err)}
	}
	return rec, nil
}

// showBackups prints a list of backups.
func (g *globals) showBackups(r *backupv1.ListBackupsResponse) error {
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
}

// showVerified prints the outcome of a verify: the chunks checked and
// those damaged.
func (g *globals) showVerified(r *backupv1.VerifyBackupResponse) {
	if g.output == "json" {
		printJSON(stdout, r)
		return
	}
	fields(stdout, "ok", strconv.FormatBool(r.GetOk()), "chunks_checked", strconv.FormatInt(r.GetChunksChecked(), 10),
		"damaged", strconv.Itoa(len(r.GetDamaged())))
	for _, d := range r.GetDamaged() {
		fmt.Fprintf(stdout, "  chunk %s at offset %d: %s\n", d.GetChunkId(), d.GetOffset(), d.GetProblem())
	}
}

func (g *globals) showBackup(b *backupv1.Backup) error {
	if g.output == "json" {
		return printJSON(stdout, b)
	}
	fields(stdout, "id", b.GetId(), "volume_id", b.GetVolumeId(), "name", b.GetName(), "status", b.GetStatus(),
		"size", humanBytes(b.GetSizeBytes()), "incremental", strconv.FormatBool(b.GetIsIncremental()),
		"strategy", b.GetStrategy(), "object_count", strconv.Itoa(int(b.GetObjectCount())),
		"fail_reason", b.GetFailReason(), "created_at", b.GetCreatedAt())
	if b.GetOrigin() != "" {
		fields(stdout, "origin", b.GetOrigin(), "parent_id", b.GetParentId())
	}
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
