"""deploy_state.json: stamped by ssd_runtime.formats.DEPLOY_STATE; old unnamed states load, others are ignored."""
from __future__ import annotations

import json

import pytest

from ssd_export.deploy.state import DeployState
from ssd_runtime.errors import FormatError
from ssd_runtime.formats import DEPLOY_STATE


def test_deploy_state_is_stamped_and_an_unnamed_old_state_still_loads(tmp_path):
    path = tmp_path / "deploy_state.json"
    path.write_text(json.dumps({"schema_version": 1, "steps": {"build:a": {"inputs": {}}}}))  # as written before
    assert DeployState(path).steps == {"build:a": {"inputs": {}}}
    DeployState(path).save()
    assert json.loads(path.read_text()) == {**DEPLOY_STATE.header(), "steps": {"build:a": {"inputs": {}}}}
    assert DeployState(path).steps == {"build:a": {"inputs": {}}}


@pytest.mark.parametrize("data", [{"format": "ssd300-deploy-report", "schema_version": 1, "steps": {"k": {}}},
                                  {"schema_version": 2, "steps": {"k": {}}}])
def test_deploy_state_of_another_format_or_a_newer_version_is_ignored(tmp_path, data):
    path = tmp_path / "deploy_state.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="newer toolkit|found format 'ssd300-deploy-report'"):
        DEPLOY_STATE.check(data, str(path))
    assert DeployState(path).steps == {}  # a state this toolkit does not read only costs a rebuild
