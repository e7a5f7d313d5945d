package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
)

// runDemo shows the system at work through gRPC and REST.
func runDemo(ctx context.Context, g *globals, st *stack) error {
	vc, done, err := g.volumes()
	if err != nil {
		return err
	}
	defer done()
	step := func(format string, args ...any) { fmt.Fprintf(stdout, "\n== "+format+"\n", args...) }

	caps, err := vc.GetCapabilities(ctx, &volumev1.GetCapabilitiesRequest{})
	if err != nil {
		return err
	}
	step("Storage backend: driver %s, point-in-time mode %s, %s free", caps.GetCapabilities().GetDriver(),
		caps.GetCapabilities().GetMode(), humanBytes(caps.GetCapabilities().GetFreeBytes()))

	name := "quickstart-" + time.Now().UTC().Format("150405")
	step("Create a 1 GiB volume %q over gRPC", name)
	cv, err := vc.CreateVolume(ctx, &volumev1.CreateVolumeRequest{ProjectId: g.project, Volume: &volumev1.VolumeInput{Size: 1, Name: name}})
	if err != nil {
		return err
	}
	vol := cv.GetVolume()
	fields(stdout, "id", vol.GetId(), "status", vol.GetStatus(), "size", humanBytes(vol.GetSizeBytes()))

	step("Read it back over REST: GET /v3/%s/volumes/%s", g.project, vol.GetId())
	var got struct {
		Volume struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Size   int64  `json:"size"`
		} `json:"volume"`
	}
	if code, err := rest(ctx, st, http.MethodGet, fmt.Sprintf("/v3/%s/volumes/%s", g.project, vol.GetId()), nil, &got); err != nil || code != http.StatusOK {
		return fmt.Errorf("REST get volume: HTTP %d: %v", code, err)
	}
	fields(stdout, "HTTP", "200", "status", got.Volume.Status, "size (GiB)", fmt.Sprint(got.Volume.Size))

	step("Extend it to 2 GiB over REST: POST /v3/%s/volumes/%s/action {\"os-extend\": {\"new_size\": 2}}", g.project, vol.GetId())
	code, err := rest(ctx, st, http.MethodPost, fmt.Sprintf("/v3/%s/volumes/%s/action", g.project, vol.GetId()),
		map[string]any{"os-extend": map[string]any{"new_size": 2}}, nil)
	if err != nil || code != http.StatusAccepted {
		return fmt.Errorf("REST extend: HTTP %d: %v", code, err)
	}
	gv, err := vc.GetVolume(ctx, &volumev1.GetVolumeRequest{ProjectId: g.project, VolumeId: vol.GetId()})
	if err != nil {
		return err
	}
	fields(stdout, "HTTP", "202", "size now", humanBytes(gv.GetVolume().GetSizeBytes()))

	step("Attach it read-write: the volume manager serves it over NBD")
	at, err := vc.AttachVolume(ctx, &volumev1.AttachVolumeRequest{ProjectId: g.project, Attachment: &volumev1.AttachmentInput{
		VolumeUuid: vol.GetId(), InstanceUuid: "quickstart", Connector: &volumev1.Connector{Host: "quickstart"}}})
	if err != nil {
		return err
	}
	fields(stdout, "attachment", at.GetAttachment().GetId(), "uri", connectionURI(at.GetAttachment().GetConnectionInfo()))
	if err := demoWriteAndBackup(ctx, g, st, vol, at.GetAttachment()); err != nil {
		return err
	}

	step("Detach and delete the volume")
	if _, err := vc.DetachVolume(ctx, &volumev1.DetachVolumeRequest{ProjectId: g.project, AttachmentId: at.GetAttachment().GetId()}); err != nil {
		return err
	}
	if code, err := rest(ctx, st, http.MethodDelete, fmt.Sprintf("/v3/%s/volumes/%s", g.project, vol.GetId()), nil, nil); err != nil || code != http.StatusAccepted {
		return fmt.Errorf("REST delete: HTTP %d: %v", code, err)
	}
	fmt.Fprintln(stdout, "  deleted.")
	fmt.Fprintln(stdout, "\nQuick start finished: every step above succeeded.")
	return nil
}

// rest makes a JSON request to the gateway and decodes the answer into out.
func rest(ctx context.Context, st *stack, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+st.gateway+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", st.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s", bytes.TrimSpace(data))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(data, out)
	}
	return resp.StatusCode, nil
}
