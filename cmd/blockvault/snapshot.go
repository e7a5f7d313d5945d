package main

import (
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/spf13/cobra"
)

func snapshotCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Create, list, show and delete snapshots"}

	var name, description string
	var force bool
	create := &cobra.Command{
		Use:   "create VOLUME_ID",
		Short: "Take a point-in-time snapshot of a volume (--force for an in-use volume)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.CreateSnapshot(cmd.Context(), &volumev1.CreateSnapshotRequest{ProjectId: g.project, Snapshot: &volumev1.SnapshotInput{
				VolumeId: args[0], Name: name, Description: description, Force: force}})
			if err != nil {
				return err
			}
			return g.showSnapshot(r.GetSnapshot())
		},
	}
	create.Flags().StringVar(&name, "name", "", "name")
	create.Flags().StringVar(&description, "description", "", "description")
	create.Flags().BoolVar(&force, "force", false, "snapshot an in-use volume")

	list := &cobra.Command{
		Use:   "list",
		Short: "List snapshots, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ListSnapshots(cmd.Context(), &volumev1.ListSnapshotsRequest{ProjectId: g.project})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(stdout, r)
			}
			var rows [][]string
			for _, s := range r.GetSnapshots() {
				rows = append(rows, []string{s.GetId(), s.GetVolumeId(), s.GetName(), s.GetStatus(), humanBytes(s.GetSizeBytes())})
			}
			table(stdout, []string{"ID", "VOLUME", "NAME", "STATUS", "SIZE"}, rows)
			return nil
		},
	}

	show := &cobra.Command{
		Use:   "show SNAPSHOT_ID",
		Short: "Show a snapshot",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.GetSnapshot(cmd.Context(), &volumev1.GetSnapshotRequest{ProjectId: g.project, SnapshotId: args[0]})
			if err != nil {
				return err
			}
			return g.showSnapshot(r.GetSnapshot())
		},
	}

	del := &cobra.Command{
		Use:   "delete SNAPSHOT_ID",
		Short: "Delete a snapshot",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.DeleteSnapshot(cmd.Context(), &volumev1.DeleteSnapshotRequest{ProjectId: g.project, SnapshotId: args[0]}); err != nil {
				return err
			}
			return g.said(map[string]string{"id": args[0], "status": "deleted"}, "snapshot %s deleted", args[0])
		},
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}

func (g *globals) showSnapshot(s *volumev1.Snapshot) error {
	if g.output == "json" {
		return printJSON(stdout, s)
	}
	fields(stdout, "id", s.GetId(), "volume_id", s.GetVolumeId(), "name", s.GetName(), "status", s.GetStatus(),
		"size", humanBytes(s.GetSizeBytes()), "created_at", s.GetCreatedAt())
	return nil
}
