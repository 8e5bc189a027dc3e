"""The garbage collector's policy each component applies at start-up (`schemas.runtime`)."""

from __future__ import annotations

import gc

import pytest

from schemas.runtime import tune_gc
from schemas.settings import RuntimeSettings


@pytest.fixture
def restored_gc():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_the_young_generation_threshold_is_set_and_startup_objects_are_frozen(restored_gc):
    tune_gc(RuntimeSettings(gc_gen0_threshold=12_345))
    assert gc.get_threshold()[0] == 12_345
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons_defaults(restored_gc):
    before = gc.get_threshold()
    tune_gc(RuntimeSettings(gc_gen0_threshold=0))
    assert gc.get_threshold() == before


def test_the_setting_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TOUCHSTREAM_GC_GEN0_THRESHOLD", "777")
    assert RuntimeSettings().gc_gen0_threshold == 777
