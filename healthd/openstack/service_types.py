"""Service types as keystoneauth matches them: os-service-types aliases (volumev3 ~ block-storage)."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _service_types() -> Any:
    import os_service_types  # keystoneauth1's own dependency; loads its bundled data

    return os_service_types.ServiceTypes()


@functools.lru_cache(maxsize=256)
def same_type(wanted: str, catalog_type: str) -> bool:
    """keystoneauth1/access/service_catalog.py matches types with os-service-types aliases
    (volumev3 finds block-storage)."""
    if wanted == catalog_type:
        return True
    try:
        return bool(_service_types().is_match(wanted, catalog_type))
    except Exception:  # an unknown type is simply no alias
        return False
