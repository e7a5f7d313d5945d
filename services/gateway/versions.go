package gateway

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// The microversions of the Block Storage API v3 the gateway answers:
// a request without an OpenStack-API-Version header is MinMicroversion's,
// python-cinderclient (9.x) asks for the highest both sides know, which is
// MaxMicroversion, and the openstack CLI with --os-volume-api-version 3
// sends none.
const (
	MinMicroversion = "3.0"
	MaxMicroversion = "3.66"
)

// versionHeader is the microversion header of the Block Storage API
// ("OpenStack-API-Version: volume 3.59").
const versionHeader = "OpenStack-API-Version"

// version is the one API version the gateway serves, as GET / and
// GET /v3/ describe it.
func version(r *http.Request) map[string]any {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return map[string]any{
		"id":          "v3.0",
		"status":      "CURRENT",
		"version":     MaxMicroversion,
		"min_version": MinMicroversion,
		"updated":     "2023-08-31T00:00:00Z",
		"links": []map[string]string{
			{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
			{"rel": "self", "href": scheme + "://" + r.Host + "/v3/"},
		},
		"media-types": []map[string]string{
			{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"},
		},
	}
}

// versions is GET / (300 Multiple Choices, as the Block Storage API
// answers) and GET /v3/ (200).
func versions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/" {
		w.WriteHeader(http.StatusMultipleChoices)
	}
	writeJSON(w, map[string]any{"versions": []any{version(r)}})
}

var reMicroversion = regexp.MustCompile(`^([1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// microversion is the minor version of "3.x" (ok false when s is not a
// version; -1 for a version of another major).
func microversion(s string) (int, bool) {
	m := reMicroversion.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[2])
	if m[1] != "3" {
		return -1, err == nil
	}
	return n, err == nil
}

// negotiate applies the Block Storage API's microversion rules to the
// requests on /v3: the version asked for in OpenStack-API-Version
// ("volume 3.x" or "volume latest"; none is MinMicroversion), a version
// out of the range a 406, a header that is not a version a 400; every
// answer names the version it is in the same header, with Vary.
func negotiate(h http.Handler) http.Handler {
	lo, _ := microversion(MinMicroversion)
	hi, _ := microversion(MaxMicroversion)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v3" && !strings.HasPrefix(r.URL.Path, "/v3/") {
			h.ServeHTTP(w, r)
			return
		}
		asked := MinMicroversion
		for _, v := range r.Header.Values(versionHeader) {
			for _, part := range strings.Split(v, ",") {
				service, ver, _ := strings.Cut(strings.TrimSpace(part), " ")
				if strings.EqualFold(service, "volume") {
					asked = strings.TrimSpace(ver)
				}
			}
		}
		w.Header().Set("Vary", versionHeader)
		if strings.EqualFold(asked, "latest") {
			asked = MaxMicroversion
		}
		n, ok := microversion(asked)
		if !ok {
			w.Header().Set(versionHeader, "volume "+MinMicroversion)
			writeError(w, http.StatusBadRequest, fmt.Sprintf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", asked))
			return
		}
		if n < lo || n > hi {
			w.Header().Set(versionHeader, "volume "+MinMicroversion)
			writeError(w, http.StatusNotAcceptable, fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", asked, MinMicroversion, MaxMicroversion))
			return
		}
		w.Header().Set(versionHeader, "volume "+asked)
		h.ServeHTTP(w, r)
	})
}
