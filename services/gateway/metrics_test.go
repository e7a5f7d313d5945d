package gateway

import "testing"

func TestRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/v3/demo/volumes":                           "/v3/{project_id}/volumes",
		"/v3/demo/volumes/detail":                    "/v3/{project_id}/volumes/detail",
		"/v3/demo/volumes/2d2f4c5e-0000-4000-8000-0": "/v3/{project_id}/volumes/{volume_id}",
		"/v3/demo/volumes/x/action":                  "/v3/{project_id}/volumes/{volume_id}/action",
		"/v3/demo/backups/import_record":             "/v3/{project_id}/backups/import_record",
		"/v3/demo/backups/b1/export_record":          "/v3/{project_id}/backups/{backup_id}/export_record",
		"/v2/demo/backups/b1":                        "/v2/{project_id}/backups/{backup_id}",
		"/healthz":                                   "/healthz",
		"/openapi.json":                              "/openapi.json",
		"/v3/demo/volumes/x/y/z":                     "other",
		"/v3//volumes":                               "other",
		"/whatever":                                  "other",
		"/":                                          "other",
	} {
		if got := Route(path); got != want {
			t.Errorf("Route(%q) = %q, want %q", path, got, want)
		}
	}
}
