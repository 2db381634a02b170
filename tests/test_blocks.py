"""Blocks: complete schemas, registered by `site up`, saved and loaded from the real server."""

from __future__ import annotations

import inspect

import pytest
from pydantic import SecretStr

from radflow.blocks import ALL_BLOCKS, OrthancServer, Site


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.__name__)
def test_every_block_is_documented(block) -> None:
    """Every field has a description and an example; the docstring shows `.load(...)`."""
    assert ".load(" in inspect.getdoc(block)
    assert block.get_block_type_slug().startswith("radflow-")
    for name, field in block.model_fields.items():
        assert field.description, f"{block.__name__}.{name} has no description"
        if name != "orthanc":  # a nested block: its own fields carry the examples
            assert field.examples, f"{block.__name__}.{name} has no example"


@pytest.mark.services
def test_site_up_saved_loadable_blocks(site) -> None:
    from radflow.site.registration import register_site_blocks, site_prefect

    with site_prefect(site):
        orthanc = OrthancServer.load("alpha-orthanc")
        assert orthanc.url == site.orthanc_url
        assert isinstance(orthanc.password, SecretStr)
        assert site.secrets.orthanc_password.get_secret_value() not in repr(orthanc)
        assert orthanc.client().system()["DicomAet"] == "ALPHA"

        loaded = Site.load("alpha")
        assert loaded.work_pool == "alpha-process"
        assert loaded.orthanc.dicom_port == site.config.ports.orthanc_dicom
        assert loaded.orthanc.client().statistics() == site.orthanc_client().statistics()
        projected = site.block()  # the block is a projection of the site handle
        assert all(getattr(loaded, k) == getattr(projected, k) for k in Site.model_fields
                   if k != "orthanc")
        assert loaded.orthanc.url == projected.orthanc.url

        register_site_blocks(site)  # idempotent: registering again changes nothing
        assert OrthancServer.load("alpha-orthanc").url == orthanc.url

        copy = OrthancServer(url="http://127.0.0.1:1", password=SecretStr("s3cret"), aet="X")
        copy.save("scratch-orthanc", overwrite=True)
        back = OrthancServer.load("scratch-orthanc")
        assert back.password.get_secret_value() == "s3cret" and back.aet == "X"
        back.delete("scratch-orthanc")
