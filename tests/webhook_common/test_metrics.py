"""The per-process registry: process and platform collectors and the build info."""

from __future__ import annotations

import platform

from webhook_common import package_version
from webhook_common.metrics import process_registry


def test_the_process_registry_has_process_platform_and_build_info() -> None:
    registry = process_registry("consumers")
    names = {m.name for m in registry.collect()}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= names
    assert "python_gc_objects_collected" in names
    labels = {"component": "consumers", "version": package_version()}
    labels["python"] = platform.python_version()
    assert registry.get_sample_value("webhookgw_build_info", labels) == 1.0
    assert package_version() != "0+unknown"  # installed in the venv


def test_each_process_gets_its_own_registry() -> None:
    assert process_registry("gateway") is not process_registry("gateway")
