package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/services/backup"
	"github.com/spf13/cobra"
)

// repositoryCmd reads a backup repository directly, without any daemon or
// database: what an operator needs after losing the backup service's
// database (list what is there, print records to import elsewhere).
func repositoryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "repository", Short: "Read a backup repository directly (no daemon, no database)"}
	cfg := backup.DaemonConfig{Container: backup.DefaultContainer}
	var records bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the backups of a container from their manifests",
		Long: "List the backups of a container from their manifests alone. With --records, print one\n" +
			"backup record per line, in the shape `blockvault backup import -` reads, to register\n" +
			"the backups with a backup service that has lost (or never had) their database rows.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Repository == "" {
				return usageError{fmt.Errorf("--repository is required (a directory, or s3://host:port/bucket[/prefix])")}
			}
			if cfg.S3AccessKey == "" {
				cfg.S3AccessKey = os.Getenv("BLOCKVAULT_S3_ACCESS_KEY")
			}
			if cfg.S3SecretKey == "" {
				cfg.S3SecretKey = os.Getenv("BLOCKVAULT_S3_SECRET_KEY")
			}
			if !strings.Contains(cfg.Repository, "://") {
				// A posix repository is a directory that must exist: listing
				// must not create one where the operator mistyped a path.
				if st, err := os.Stat(cfg.Repository); err != nil || !st.IsDir() {
					return usageError{fmt.Errorf("repository %s: not a directory", cfg.Repository)}
				}
			}
			eng, err := backup.OpenEngine(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			// Reading a container that is not there would create it.
			if _, err := eng.Repository().Stat(cmd.Context(), cfg.Container+"/config"); err != nil {
				if errors.Is(err, repository.ErrNotFound) {
					return notFoundError{fmt.Errorf("container %q does not exist in repository %s", cfg.Container, eng.Repository().Location())}
				}
				return err
			}
			sums, err := eng.ListBackups(cmd.Context(), cfg.Container)
			if err != nil {
				return fmt.Errorf("container %q: %w", cfg.Container, err)
			}
			switch {
			case records:
				for _, s := range sums {
					rec, err := eng.ExportRecord(cmd.Context(), cfg.Container, s.BackupID)
					if err != nil {
						return fmt.Errorf("backup %s: %w", s.BackupID, err)
					}
					if err := printJSON(stdout, &backupv1.BackupRecord{BackupService: "blockvault",
						BackupUrl: base64.StdEncoding.EncodeToString(rec)}); err != nil {
						return err
					}
				}
			case g.output == "json":
				for _, s := range sums {
					b, _ := json.Marshal(map[string]any{"backup_id": s.BackupID, "volume_id": s.VolumeID, "parent_id": s.ParentID,
						"size_bytes": s.Size, "data_chunks": s.DataChunks, "finished": s.Finished.UTC().Format(time.RFC3339)})
					fmt.Fprintln(stdout, string(b))
				}
			default:
				rows := [][]string{}
				for _, s := range sums {
					rows = append(rows, []string{s.BackupID, s.VolumeID, s.ParentID, humanBytes(s.Size),
						fmt.Sprint(s.DataChunks), s.Finished.UTC().Format(time.RFC3339)})
				}
				table(stdout, []string{"BACKUP", "VOLUME", "PARENT", "SIZE", "CHUNKS", "FINISHED"}, rows)
			}
			return nil
		},
	}
	f := list.Flags()
	f.StringVar(&cfg.Repository, "repository", "", "the repository: a directory, or s3://host:port/bucket[/prefix] (s3s:// for TLS)")
	f.StringVar(&cfg.Container, "container", cfg.Container, "the container to list")
	f.StringVar(&cfg.KeyFile, "encryption-key-file", "", "the repository key, for encrypted containers")
	f.StringVar(&cfg.S3AccessKey, "s3-access-key", "", "S3 access key (or BLOCKVAULT_S3_ACCESS_KEY)")
	f.StringVar(&cfg.S3SecretKey, "s3-secret-key", "", "S3 secret key (or BLOCKVAULT_S3_SECRET_KEY)")
	f.StringVar(&cfg.S3Region, "s3-region", "", "S3 region")
	f.BoolVar(&records, "records", false, "print importable backup records, one per line")
	cmd.AddCommand(list)
	return cmd
}
