package cinder

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind is the Cinder backup driver that wrote a backup.
type Kind string

// The chunked drivers whose backups this package reads.
const (
	// Posix is cinder.backup.drivers.posix.PosixBackupDriver.
	Posix Kind = "posix"
	// NFS is cinder.backup.drivers.nfs.NFSBackupDriver: the posix
	// driver's layout on an NFS share.
	NFS Kind = "nfs"
	// S3 is cinder.backup.drivers.s3.S3BackupDriver.
	S3 Kind = "s3"
)

// drivers maps the driver modules Cinder names in backup_service (the
// class path since Rocky, the module alone before) to their kind.
var drivers = map[string]Kind{
	"cinder.backup.drivers.posix": Posix,
	"cinder.backup.drivers.nfs":   NFS,
	"cinder.backup.drivers.s3":    S3,
}

// otherDrivers are Cinder drivers whose backups cannot be imported, with
// why, for the error.
var otherDrivers = map[string]string{
	"cinder.backup.drivers.swift":     "Swift's chunked backups live in a Swift container, which blockvault cannot read",
	"cinder.backup.drivers.gcs":       "Google Cloud Storage backups live in a GCS bucket, which blockvault cannot read",
	"cinder.backup.drivers.ceph":      "Ceph backups are RBD images and snapshots, not chunked objects",
	"cinder.backup.drivers.glusterfs": "GlusterFS backups are not supported (the posix layout on a GlusterFS share: mount it and re-export the records as posix ones at your own risk)",
	"cinder.backup.drivers.tsm":       "TSM backups live in IBM Spectrum Protect",
}

// Record is what blockvault keeps of a Cinder backup from its export
// record: enough to list and show it as Cinder did and to find its objects.
type Record struct {
	// Service is backup_service as given (the driver's class path).
	Service string
	Kind    Kind
	// ID is the backup's id, kept by the import.
	ID       string
	VolumeID string
	// ParentID is the parent's id for an incremental, else empty.
	ParentID    string
	Name        string
	Description string
	CreatedAt   time.Time
	// DataTimestamp is when the data was taken (a snapshot's time for a
	// backup of a snapshot); zero when Cinder did not record it.
	DataTimestamp time.Time
	// SizeGB is the volume's size in GiB when it was backed up.
	SizeGB int64
	// Container is where the objects are: a directory under the
	// repository's root (posix, NFS) or the bucket (S3).
	Container string
	// Prefix starts every object's name (service_metadata).
	Prefix string
	// ObjectCount is the number of data objects Cinder wrote.
	ObjectCount      int
	AvailabilityZone string
	ProjectID        string
	UserID           string
	SnapshotID       string
	// EncryptionKeyID is set for a backup of an encrypted volume: its data
	// is the volume's ciphertext, and the key stays in Cinder's key
	// manager (Barbican).
	EncryptionKeyID string
	// Metadata is the backup's metadata (key/value pairs).
	Metadata map[string]string
}

// Incremental reports whether the backup restores over a parent.
func (r *Record) Incremental() bool { return r.ParentID != "" }

// Link is where the record's backup is in its repository.
func (r *Record) Link() Link {
	return Link{BackupID: r.ID, Kind: r.Kind, Container: r.Container, Prefix: r.Prefix}
}

// exportedBackup is the JSON of backup_url: Cinder's Backup object's fields
// (objects/backup.py, encode_record), with driver_info.
type exportedBackup struct {
	ID                 *string           `json:"id"`
	UserID             *string           `json:"user_id"`
	ProjectID          *string           `json:"project_id"`
	VolumeID           *string           `json:"volume_id"`
	AvailabilityZone   *string           `json:"availability_zone"`
	Container          *string           `json:"container"`
	ParentID           *string           `json:"parent_id"`
	Status             *string           `json:"status"`
	Size               *int64            `json:"size"`
	DisplayName        *string           `json:"display_name"`
	DisplayDescription *string           `json:"display_description"`
	ServiceMetadata    *string           `json:"service_metadata"`
	Service            *string           `json:"service"`
	ObjectCount        *int              `json:"object_count"`
	SnapshotID         *string           `json:"snapshot_id"`
	DataTimestamp      *string           `json:"data_timestamp"`
	CreatedAt          *string           `json:"created_at"`
	EncryptionKeyID    *string           `json:"encryption_key_id"`
	Metadata           map[string]string `json:"metadata"`
}

// ParseExportRecord reads Cinder's export record of a backup (`cinder
// backup-export` or GET /backups/{id}/export_record): backupService names
// the driver, backupURL is base64 of the backup's JSON. Only backups of
// the posix, NFS and S3 drivers are accepted.
func ParseExportRecord(backupService, backupURL string) (*Record, error) {
	kind, err := driverKind(backupService)
	if err != nil {
		return nil, err
	}
	raw, err := decodeBase64(backupURL)
	if err != nil {
		return nil, fmt.Errorf("%w: backup_url is not base64: %w", ErrInvalidRecord, err)
	}
	var b exportedBackup
	if err := json.Unmarshal(raw, &b); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: backup_url's field %q is a %s, not a %s", ErrInvalidRecord, te.Field, te.Value, te.Type)
		}
		return nil, fmt.Errorf("%w: backup_url is not a backup's JSON: %w", ErrInvalidRecord, err)
	}
	for field, v := range map[string]*string{"id": b.ID, "volume_id": b.VolumeID, "container": b.Container, "service_metadata": b.ServiceMetadata, "created_at": b.CreatedAt} {
		if v == nil || *v == "" {
			return nil, fmt.Errorf("%w: backup_url has no %s", ErrInvalidRecord, field)
		}
	}
	if b.Service != nil && *b.Service != "" {
		if k, err := driverKind(*b.Service); err != nil || k != kind {
			return nil, fmt.Errorf("%w: backup_service %q, but the backup's own service is %q", ErrInvalidRecord, backupService, *b.Service)
		}
	}
	if b.Status != nil && *b.Status != "available" {
		return nil, fmt.Errorf("%w: backup %s is %q in the record, not available", ErrInvalidRecord, *b.ID, *b.Status)
	}
	r := &Record{
		Service:          backupService,
		Kind:             kind,
		ID:               *b.ID,
		VolumeID:         *b.VolumeID,
		ParentID:         str(b.ParentID),
		Name:             str(b.DisplayName),
		Description:      str(b.DisplayDescription),
		Container:        *b.Container,
		Prefix:           *b.ServiceMetadata,
		AvailabilityZone: str(b.AvailabilityZone),
		ProjectID:        str(b.ProjectID),
		UserID:           str(b.UserID),
		SnapshotID:       str(b.SnapshotID),
		EncryptionKeyID:  str(b.EncryptionKeyID),
		Metadata:         b.Metadata,
	}
	if b.Size != nil {
		r.SizeGB = *b.Size
	}
	if b.ObjectCount != nil {
		r.ObjectCount = *b.ObjectCount
	}
	if r.CreatedAt, err = parseTime(*b.CreatedAt); err != nil {
		return nil, fmt.Errorf("%w: created_at: %w", ErrInvalidRecord, err)
	}
	if b.DataTimestamp != nil && *b.DataTimestamp != "" {
		if r.DataTimestamp, err = parseTime(*b.DataTimestamp); err != nil {
			return nil, fmt.Errorf("%w: data_timestamp: %w", ErrInvalidRecord, err)
		}
	}
	return r, nil
}

// driverKind maps a backup_service to the driver's kind.
func driverKind(service string) (Kind, error) {
	s := strings.TrimSpace(service)
	if s == "" {
		return "", fmt.Errorf("%w: backup_service is empty", ErrInvalidRecord)
	}
	module := s
	if i := strings.LastIndex(s, "."); i > 0 && strings.HasSuffix(s, "BackupDriver") {
		module = s[:i]
	}
	if k, ok := drivers[module]; ok {
		return k, nil
	}
	if why, ok := otherDrivers[module]; ok {
		return "", fmt.Errorf("%w: backup_service %q: %s; only the posix, nfs and s3 drivers' backups can be imported", ErrUnsupported, service, why)
	}
	return "", fmt.Errorf("%w: backup_service %q is not a Cinder backup driver this import knows; only the posix, nfs and s3 drivers' backups (cinder.backup.drivers.posix.PosixBackupDriver, ...nfs.NFSBackupDriver, ...s3.S3BackupDriver) can be imported", ErrUnsupported, service)
}

// decodeBase64 reads oslo's base64 (standard, padded), tolerating
// whitespace, missing padding and the URL alphabet.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	if s == "" {
		return nil, errors.New("empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err == nil {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err2 := enc.DecodeString(s); err2 == nil {
			return b, nil
		}
	}
	return nil, err
}

// timeLayouts are the forms Cinder writes times in: oslo's isotime in
// export records ("2024-05-01T12:00:00Z", with microseconds or an offset in
// some releases) and Python's str() in the metadata object.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999",
	"2006-01-02 15:04:05.999999Z07:00",
	"2006-01-02 15:04:05.999999",
}

func parseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time Cinder writes", s)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
