"""Makes real Cinder backups of volume files, for blockvault's import tests.

Runs Cinder's own backup manager and chunked backup driver (posix or S3)
outside a full OpenStack: oslo.config is set up by hand, the database is a
sqlite file made by cinder.db.migration.db_sync(), and the volume and backup
rows are made through Cinder's objects. Each backup is made from one volume
file by the driver's backup(), finished by the manager's _finish_backup()
(status, size, the parent's dependent count) and exported by the manager's
export_record(), the call behind `cinder backup-export`.

Reads a JSON spec on stdin; writes the export records, one per backup, as a
JSON list on stdout. Cinder's logs go to stderr.
"""

import json
import os
import sys

DRIVERS = {
    'posix': 'cinder.backup.drivers.posix.PosixBackupDriver',
    's3': 'cinder.backup.drivers.s3.S3BackupDriver',
}


def configure(spec):
    # Imports register the options set below; oslo.messaging's transport
    # options are registered by hand (a real service's start-up does it).
    import oslo_messaging
    from oslo_config import cfg

    from cinder import objects
    objects.register_all()
    import cinder.backup.chunkeddriver  # noqa: F401
    import cinder.backup.drivers.posix  # noqa: F401
    import cinder.backup.drivers.s3  # noqa: F401
    import cinder.backup.manager  # noqa: F401
    from cinder.common import config  # noqa: F401

    conf = cfg.CONF
    conf([], project='cinder', default_config_files=[],
         default_config_dirs=[])
    oslo_messaging.set_transport_defaults('cinder')
    conf.register_opts(oslo_messaging.transport._transport_opts)
    work = spec['work_dir']
    set_ = conf.set_override
    set_('state_path', work)
    set_('connection', 'sqlite:///' + os.path.join(work, 'cinder.sqlite'),
         group='database')
    set_('lock_path', os.path.join(work, 'locks'), group='oslo_concurrency')
    set_('transport_url', 'fake:/')
    set_('storage_availability_zone', spec['availability_zone'])
    set_('backup_compression_algorithm', spec['compression'])
    set_('backup_driver', DRIVERS[spec['driver']])
    if spec['driver'] == 'posix':
        set_('backup_posix_path', spec['posix_path'])
        set_('backup_file_size', spec['object_size'])
        set_('backup_sha_block_size_bytes', spec['block_size'])
        set_('backup_enable_progress_timer', False)
        if spec.get('container'):
            set_('backup_container', spec['container'])
    else:
        s3 = spec['s3']
        set_('backup_s3_endpoint_url', s3['endpoint_url'])
        set_('backup_s3_store_access_key', s3['access_key'])
        set_('backup_s3_store_secret_key', s3['secret_key'])
        set_('backup_s3_store_bucket', s3['bucket'])
        set_('backup_s3_object_size', spec['object_size'])
        set_('backup_s3_block_size', spec['block_size'])
        set_('backup_s3_enable_progress_timer', False)
        os.environ.setdefault('AWS_DEFAULT_REGION', s3['region'])


def main():
    spec = json.load(sys.stdin)
    configure(spec)

    from cinder import context
    from cinder.db import migration
    from cinder import objects
    from cinder.objects import fields
    from cinder import rpc
    from cinder.backup import manager
    from oslo_config import cfg

    migration.db_sync()
    rpc.init(cfg.CONF)
    ctx = context.RequestContext('blockvault-user', 'blockvault-project',
                                 is_admin=True)
    mgr = manager.BackupManager()
    az = spec['availability_zone']
    volume = objects.Volume(ctx, size=spec['volume_size_gb'],
                            status='backing-up', display_name='source',
                            availability_zone=az, user_id=ctx.user_id,
                            project_id=ctx.project_id)
    volume.create()

    records = []
    parent = None
    for step in spec['backups']:
        backup = objects.Backup(
            ctx, volume_id=volume.id, user_id=ctx.user_id,
            project_id=ctx.project_id, display_name=step.get('name'),
            display_description=step.get('description'),
            status=fields.BackupStatus.CREATING, container=None,
            parent_id=parent.id if parent else None,
            availability_zone=az, host='cinder-backup@test',
            size=volume.size)
        backup.create()
        # As the manager's create_backup does, before the driver runs.
        backup.service = mgr.driver_name
        backup.save()
        driver = mgr.service(ctx)
        with open(step['file'], 'rb') as f:
            updates = driver.backup(backup, f)
        backup.refresh()
        mgr._finish_backup(ctx, backup, volume, updates)
        records.append(mgr.export_record(ctx, backup))
        parent = backup
        # _finish_backup put the volume back in its previous status.
        volume.refresh()
        volume.status = 'backing-up'
        volume.save()
    json.dump(records, sys.stdout)


if __name__ == '__main__':
    main()
