package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	"github.com/blockvault/blockvault/pkg/engine"
	"github.com/blockvault/blockvault/pkg/repository"
	"github.com/blockvault/blockvault/pkg/repository/location"
	"github.com/spf13/cobra"
)

// repositoryCmd reads a backup repository directly, without any daemon or
// database: what an operator needs after losing the backup service's
// database (list what is there, print records to import elsewhere).
func repositoryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "repository", Short: "Read a backup repository directly (no daemon, no database)"}
	var (
		repo      location.Config
		container = engine.DefaultContainer
		keyFile   string
		records   bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the backups of a container from their manifests",
		Long: "List the backups of a container from their manifests alone. With --records, print one\n" +
			"backup record per line, in the shape `blockvault backup import -` reads, to register\n" +
			"the backups with a backup service that has lost (or never had) their database rows.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if repo.URL == "" {
				return usageError{fmt.Errorf("--repository is required (a directory, or s3://host:port/bucket[/prefix])")}
			}
			if repo.S3AccessKey == "" {
				repo.S3AccessKey = os.Getenv("BLOCKVAULT_S3_ACCESS_KEY")
			}
			if repo.S3SecretKey == "" {
				repo.S3SecretKey = os.Getenv("BLOCKVAULT_S3_SECRET_KEY")
			}
			if dir, ok := location.Directory(repo.URL); ok {
				// A posix repository is a directory that must exist: listing
				// must not create one where the operator mistyped a path.
				if st, err := os.Stat(dir); err != nil || !st.IsDir() {
					return usageError{fmt.Errorf("repository %s: not a directory", repo.URL)}
				}
			}
			eng, err := openEngine(cmd.Context(), repo, keyFile)
			if err != nil {
				return err
			}
			// Reading a container that is not there would create it.
			if _, err := eng.Repository().Stat(cmd.Context(), container+"/config"); err != nil {
				if errors.Is(err, repository.ErrNotFound) {
					return notFoundError{fmt.Errorf("container %q does not exist in repository %s", container, eng.Repository().Location())}
				}
				return err
			}
			sums, err := eng.ListBackups(cmd.Context(), container)
			if err != nil {
				return fmt.Errorf("container %q: %w", container, err)
			}
			switch {
			case records:
				for _, s := range sums {
					rec, err := eng.ExportRecord(cmd.Context(), container, s.BackupID)
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
	location.Flags(f, &repo, "")
	f.StringVar(&container, "container", container, "the container to list")
	f.StringVar(&keyFile, "encryption-key-file", "", "the repository key, for encrypted containers")
	f.BoolVar(&records, "records", false, "print importable backup records, one per line")
	cmd.AddCommand(list)
	return cmd
}

// openEngine opens the repository with the backup engine, to read it.
func openEngine(ctx context.Context, repo location.Config, keyFile string) (*engine.Engine, error) {
	r, err := location.Open(ctx, repo)
	if err != nil {
		return nil, err
	}
	var key []byte
	if keyFile != "" {
		if key, err = engine.ReadKeyFile(keyFile); err != nil {
			return nil, err
		}
	}
	return engine.New(r, engine.Options{Key: key})
}
