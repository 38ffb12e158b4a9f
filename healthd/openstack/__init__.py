"""What probes share about OpenStack itself, kept out of the engine.

- ``cells``: nova's cells v2 (nova_api.cell_mappings, cell0, per-cell databases);
- ``oslo_ini``: reading the services' config files with oslo.config, the options declared as
  oslo.messaging, oslo.cache and keystonemiddleware declare them;
- ``messaging``: oslo.messaging's view of a broker: TLS as its rabbit driver sets it up, and the
  configure/write/read permissions a service needs, asked without changing anything.

The engine (healthd.probe, healthd.scheduler, healthd.exporter, ...) never imports this package.
"""
