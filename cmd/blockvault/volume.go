package main

import (
	"fmt"
	"strconv"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/spf13/cobra"
)

func volumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "volume", Short: "Create, list, show, extend, attach, detach and delete volumes"}

	var size int32
	var sizeBytes int64
	var name, description, snapshotID, sourceID string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a volume (empty, from a snapshot, or a clone)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.CreateVolume(cmd.Context(), &volumev1.CreateVolumeRequest{ProjectId: g.project, Volume: &volumev1.VolumeInput{
				Size: size, SizeBytes: sizeBytes, Name: name, Description: description, SnapshotId: snapshotID, SourceVolid: sourceID}})
			if err != nil {
				return err
			}
			return g.showVolume(r.GetVolume())
		},
	}
	create.Flags().Int32Var(&size, "size", 0, "size in GiB")
	create.Flags().Int64Var(&sizeBytes, "size-bytes", 0, "size in bytes (a multiple of 1 MiB), instead of --size")
	create.Flags().StringVar(&name, "name", "", "name")
	create.Flags().StringVar(&description, "description", "", "description")
	create.Flags().StringVar(&snapshotID, "snapshot", "", "make the volume from this snapshot")
	create.Flags().StringVar(&sourceID, "source", "", "make the volume a clone of this volume")

	list := &cobra.Command{
		Use:   "list",
		Short: "List volumes, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ListVolumes(cmd.Context(), &volumev1.ListVolumesRequest{ProjectId: g.project})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(stdout, r)
			}
			var rows [][]string
			for _, v := range r.GetVolumes() {
				rows = append(rows, []string{v.GetId(), v.GetName(), volumeStatus(v), humanBytes(v.GetSizeBytes()), strconv.Itoa(len(v.GetAttachments()))})
			}
			table(stdout, []string{"ID", "NAME", "STATUS", "SIZE", "ATTACHMENTS"}, rows)
			return nil
		},
	}

	show := &cobra.Command{
		Use:   "show VOLUME_ID",
		Short: "Show a volume",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.GetVolume(cmd.Context(), &volumev1.GetVolumeRequest{ProjectId: g.project, VolumeId: args[0]})
			if err != nil {
				return err
			}
			return g.showVolume(r.GetVolume())
		},
	}

	var newSize int32
	var newSizeBytes int64
	extend := &cobra.Command{
		Use:   "extend VOLUME_ID",
		Short: "Grow an available volume",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.ExtendVolume(cmd.Context(), &volumev1.ExtendVolumeRequest{ProjectId: g.project, VolumeId: args[0], NewSize: newSize, NewSizeBytes: newSizeBytes})
			if err != nil {
				return err
			}
			if g.output == "table" {
				fmt.Fprintf(stdout, "volume %s extended to %s\n", r.GetVolume().GetId(), humanBytes(r.GetVolume().GetSizeBytes()))
			}
			return g.showVolume(r.GetVolume())
		},
	}
	extend.Flags().Int32Var(&newSize, "size", 0, "new size in GiB")
	extend.Flags().Int64Var(&newSizeBytes, "size-bytes", 0, "new size in bytes, instead of --size")

	del := &cobra.Command{
		Use:   "delete VOLUME_ID",
		Short: "Delete a volume without snapshots or attachments",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.DeleteVolume(cmd.Context(), &volumev1.DeleteVolumeRequest{ProjectId: g.project, VolumeId: args[0]}); err != nil {
				return err
			}
			return g.said(map[string]string{"id": args[0], "status": "deleted"}, "volume %s deleted", args[0])
		},
	}

	var mode, host string
	var local bool
	attach := &cobra.Command{
		Use:   "attach VOLUME_ID",
		Short: "Attach a volume: prints how to reach it (an NBD URI, or a local path)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.AttachVolume(cmd.Context(), &volumev1.AttachVolumeRequest{ProjectId: g.project, Attachment: &volumev1.AttachmentInput{
				VolumeUuid: args[0], Mode: mode, Connector: &volumev1.Connector{Host: host, Local: local}}})
			if err != nil {
				return err
			}
			a := r.GetAttachment()
			if g.output == "json" {
				return printJSON(stdout, a)
			}
			fields(stdout, "attachment_id", a.GetId(), "volume_id", a.GetVolumeId(), "mode", a.GetAttachMode(), "uri", connectionURI(a.GetConnectionInfo()))
			return nil
		},
	}
	attach.Flags().StringVar(&mode, "mode", "rw", "rw or ro")
	attach.Flags().StringVar(&host, "host", "", "the consumer's node name")
	attach.Flags().BoolVar(&local, "local", false, "ask for a local path (consumer on the volume manager's node)")

	detach := &cobra.Command{
		Use:   "detach ATTACHMENT_ID",
		Short: "Remove an attachment and its export",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.volumes()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.DetachVolume(cmd.Context(), &volumev1.DetachVolumeRequest{ProjectId: g.project, AttachmentId: args[0]}); err != nil {
				return err
			}
			return g.said(map[string]string{"attachment_id": args[0], "status": "detached"}, "attachment %s detached (its export is gone)", args[0])
		},
	}
	cmd.AddCommand(create, list, show, extend, del, attach, detach)
	return cmd
}

func (g *globals) showVolume(v *volumev1.Volume) error {
	if g.output == "json" {
		return printJSON(stdout, v)
	}
	fields(stdout, "id", v.GetId(), "name", v.GetName(), "status", v.GetStatus(), "size", humanBytes(v.GetSizeBytes()),
		"previous_status", v.GetPreviousStatus(), "attachments", strconv.Itoa(len(v.GetAttachments())), "created_at", v.GetCreatedAt())
	if l := v.GetLiveRestore(); l != nil {
		fields(stdout, "live_restore", l.GetStatus()+" from backup "+l.GetBackupId(),
			"filled", fmt.Sprintf("%s of %s", humanBytes(l.GetBytesFilled()), humanBytes(l.GetBytesTotal())), "fail_reason", v.GetFailReason())
	}
	return nil
}

// volumeStatus is a volume's status, with how far a live restore filled it.
func volumeStatus(v *volumev1.Volume) string {
	l := v.GetLiveRestore()
	if l == nil {
		return v.GetStatus()
	}
	pct := 0.0
	if l.GetBytesTotal() > 0 {
		pct = 100 * float64(l.GetBytesFilled()) / float64(l.GetBytesTotal())
	}
	return fmt.Sprintf("%s (live restore %s, %.0f%%)", v.GetStatus(), l.GetStatus(), pct)
}

// connectionURI renders connection info as an NBD URI or a path.
func connectionURI(ci *volumev1.ConnectionInfo) string {
	d := ci.GetData()
	if ci.GetDriverVolumeType() == "local" {
		return d.GetDevicePath()
	}
	scheme := "nbd"
	if d.GetTls() {
		scheme = "nbds"
	}
	return fmt.Sprintf("%s://%s:%d/%s", scheme, d.GetHost(), d.GetPort(), d.GetExportName())
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}
