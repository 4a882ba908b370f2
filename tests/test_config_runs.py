"""The runs every shipped config plans keep their names and identities.

tests/fixtures/config_runs.json was recorded (tests/record_config_runs.py)
before the method registry replaced RunConfig's per-method fields: a run
folder trained before that change is found again and resumes.
"""

from __future__ import annotations

import json
import os

import pytest

from tests import record_config_runs

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "config_runs.json")
RECORDED = json.load(open(FIXTURE))


def test_every_shipped_config_is_recorded():
    assert sorted(RECORDED) == record_config_runs.config_files()


@pytest.mark.parametrize("path", sorted(RECORDED))
def test_a_configs_runs_keep_their_names_and_identities(path):
    now = record_config_runs.record_one(path)
    assert [r["run"] for r in now] == [r["run"] for r in RECORDED[path]]
    assert now == RECORDED[path]
