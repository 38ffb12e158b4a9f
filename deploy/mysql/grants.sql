-- Least-privilege MariaDB/MySQL account for healthd: SELECT on exactly the
-- tables its database probes read, nothing else (no INSERT/UPDATE/DELETE, no
-- access to other tables such as keystone's credentials or nova's instance
-- metadata).
--
-- Placeholders (replace all before applying):
--   @HEALTHD_USER@       account name, e.g. healthd
--   @HEALTHD_HOST@       host part, e.g. % or the healthd server's address
--   @HEALTHD_PASSWORD@   password (keep it in a credentials file, see deploy/systemd)
--   @KEYSTONE_DB@        keystone database, e.g. keystone
--   @NOVA_API_DB@        nova API database, e.g. nova_api
--   @PLACEMENT_DB@       placement database, e.g. placement
--   @NOVA_CELL_DB@       a cell database, e.g. nova (cell1); repeat the cell
--                        block for every cell (nova_cell2, ...) and for cell0
--                        (nova_cell0): nova_services reads cell0's services (the
--                        super-conductor and scheduler of the superconductor
--                        layout register there; a nova-compute there is a
--                        fault). Without it, cell0 is named as not read.
--
-- Apply on the database server as an administrator, for example:
--   sed -e 's/@HEALTHD_USER@/healthd/g' -e 's/@HEALTHD_HOST@/%/g' \
--       -e "s/@HEALTHD_PASSWORD@/$(cat /etc/healthd/credentials/db)/g" \
--       -e 's/@KEYSTONE_DB@/keystone/g' -e 's/@NOVA_API_DB@/nova_api/g' \
--       -e 's/@PLACEMENT_DB@/placement/g' -e 's/@NOVA_CELL_DB@/nova/g' \
--       deploy/mysql/grants.sql | mysql -u root
--
-- Cell databases are found through nova_api.cell_mappings, whose
-- database_connection carries nova's own account: point healthd at the cells
-- with its own account via backends.databases.cells.<cell name>.url.
--
-- Which probe needs what (the SQL is in checks/*.py):
--   catalog (source: db)         keystone.service, keystone.endpoint
--   cell_mapping                 nova_api.cell_mappings, nova_api.host_mappings;
--                                <cell>.services, <cell>.compute_nodes
--   nova_services (source: db)   nova_api.cell_mappings, nova_api.build_requests,
--                                nova_api.request_specs, nova_api.aggregate_hosts,
--                                nova_api.aggregate_metadata (zone labels);
--                                <cell>.services (cell0 too), <cell>.instances
--   disk_overcommit              nova_api.cell_mappings; <cell>.compute_nodes;
--                                placement.resource_providers, placement.inventories,
--                                placement.allocations, placement.resource_classes
--   service_config (optional)    nova_api.cell_mappings (each cell's broker)
--   cell_connections             nova_api.cell_mappings only: each cell's database and
--                                broker are logged in to with the credentials the mapping
--                                stores (read-only session, SELECT 1; AMQP login), not these
--   placement_allocations        nova_api.cell_mappings, nova_api.instance_mappings,
--                                nova_api.build_requests; <cell>.instances,
--                                <cell>.migrations, <cell>.compute_nodes (cell0 too);
--                                placement.allocations, placement.resource_providers,
--                                placement.resource_classes
--   api_backends                 nothing: no database access (the catalog comes from a token,
--                                backends from HAProxy's stats or the config)
--   image_properties (optional)  placement.resource_providers, placement.resource_provider_traits,
--                                placement.traits (images and flavors come from the APIs)
--   flavor_filters               nova_api.flavors, nova_api.flavor_extra_specs,
--                                nova_api.flavor_projects, nova_api.aggregate_hosts,
--                                nova_api.aggregate_metadata, nova_api.cell_mappings;
--                                <cell>.compute_nodes, <cell>.services; optionally
--                                placement.resource_providers, placement.inventories,
--                                placement.resource_classes, placement.resource_provider_traits,
--                                placement.traits
--   db_grants                    the grant tables below (backends.databases.mysql: a URL
--                                on the `mysql` schema), nova_api.cell_mappings

CREATE USER IF NOT EXISTS '@HEALTHD_USER@'@'@HEALTHD_HOST@' IDENTIFIED BY '@HEALTHD_PASSWORD@';

-- keystone: the service catalog
GRANT SELECT ON `@KEYSTONE_DB@`.`service` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@KEYSTONE_DB@`.`endpoint` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';

-- nova_api: cells, host mappings, builds not yet in a cell, availability zones
GRANT SELECT ON `@NOVA_API_DB@`.`cell_mappings` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`host_mappings` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`build_requests` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`instance_mappings` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`request_specs` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`aggregate_hosts` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`aggregate_metadata` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
-- nova_api: flavors and their extra specs and project access (flavor_filters)
GRANT SELECT ON `@NOVA_API_DB@`.`flavors` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`flavor_extra_specs` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_API_DB@`.`flavor_projects` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';

-- placement: DISK_GB inventory and usage
GRANT SELECT ON `@PLACEMENT_DB@`.`resource_providers` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@PLACEMENT_DB@`.`inventories` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@PLACEMENT_DB@`.`allocations` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@PLACEMENT_DB@`.`resource_classes` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
-- placement: the compute nodes' traits (image_properties, flavor_filters)
GRANT SELECT ON `@PLACEMENT_DB@`.`resource_provider_traits` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@PLACEMENT_DB@`.`traits` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';

-- cell database (repeat for every cell, cell0 included); rabbit_queues needs only
-- nova_api.cell_mappings and services here (the queue names come from the services rows)
GRANT SELECT ON `@NOVA_CELL_DB@`.`services` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_CELL_DB@`.`compute_nodes` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_CELL_DB@`.`instances` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `@NOVA_CELL_DB@`.`migrations` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';

-- db_grants: the grant tables, without a password hash. Column grants on the
-- mysql.user view leave out Password and authentication_string; mysql.global_priv
-- (whose Priv JSON holds the hashes) is not granted. mysql.db, mysql.tables_priv and
-- mysql.roles_mapping hold no secret. (Access_denied_errors needs no privilege.)
GRANT SELECT (Host, User, Select_priv, Insert_priv, Update_priv, Delete_priv, Create_priv, Drop_priv, Index_priv, Alter_priv, is_role, default_role) ON `mysql`.`user` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `mysql`.`db` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `mysql`.`tables_priv` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
GRANT SELECT ON `mysql`.`roles_mapping` TO '@HEALTHD_USER@'@'@HEALTHD_HOST@';
