"""Fixtures for the packaging tests: the packages built from the working tree."""

from __future__ import annotations

import pytest

from tests.packaging.support import Packages, build_packages, need, source_version


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """The .deb and .rpm of the working tree, built once per test session."""
    need("tar", "gzip")
    built = build_packages(tmp_path_factory.mktemp("dist"), source_version())
    assert built.deb.is_file(), f"no {built.deb.name} after build.sh"
    assert built.rpm.is_file(), f"no {built.rpm.name} after build.sh"
    return built


@pytest.fixture(scope="session")
def upgrade_deb(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """A .deb of the same tree with a higher version, to upgrade over the first one."""
    built = build_packages(tmp_path_factory.mktemp("dist-up"), source_version() + "+1", "deb")
    assert built.deb.is_file()
    return built
