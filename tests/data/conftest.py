"""Fixtures of the data tests."""
import pytest

from tfrec_onerec.data import simulator


@pytest.fixture(scope="module")
def small_world():
    return simulator.simulate(simulator.SimulatorConfig(num_users=400, num_items=120, num_categories=6))
