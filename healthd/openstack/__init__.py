"""What probes share about OpenStack itself, kept out of the engine.

- ``cells``: nova's cells v2 (nova_api.cell_mappings, cell0, per-cell databases);
- ``oslo_ini``: reading the services' oslo.config INI files;
- ``messaging``: oslo.messaging's view of a broker (TLS settings as the rabbit driver uses them).

The engine (healthd.probe, healthd.scheduler, healthd.exporter, ...) never imports this package.
"""
