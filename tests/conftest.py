"""Shared test set-up. Importing tfrec_onerec first fixes the TensorFlow environment."""
import os
import sys

import pytest

import tfrec_onerec  # noqa: F401  (sets the TF environment before TensorFlow is imported)

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)  # helper modules of the tests (known_answer)

from known_answer import known_answer_columns, known_answer_spec  # noqa: E402


@pytest.fixture(scope="session")
def known_answer():
    """(spec, train columns, test columns) of the known-answer data set."""
    return known_answer_spec(), known_answer_columns(6000, 0), known_answer_columns(2000, 1)


# Modules by their time in the default run (2 workers, ``--dist loadfile``), heaviest first
# (seconds in the last clean-clone run: 657, 380, 337, 329, 178, 146, 115, 95, 87, 87, 53, 47).
# xdist hands whole modules to the workers in collection order (the Makefile turns off its
# reordering by test count), one more whenever a worker is nearly out of work, so starting
# with the longest keeps one worker from running a long module alone at the end. Modules not
# listed follow in their usual order.
HEAVIEST_MODULES = (
    "test_notebooks.py", "tfx_pipelines/test_tfx_pipeline.py", "tfx_pipelines/test_family_pipelines.py",
    "test_readme_claims.py", "models/test_multitask.py", "test_cli.py", "generative/test_alignment.py",
    "generative/test_onerec.py", "models/test_din.py", "models/test_emer.py", "models/test_sim.py",
    "generative/test_reward.py",
    "models/test_neighbour_enhanced_dnn.py", "models/test_lsir.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_MODULES)}

    def module_rank(item):
        relative = os.path.relpath(str(item.path), TESTS).replace(os.sep, "/")
        return rank.get(relative, len(rank))

    items.sort(key=module_rank)  # stable: the order within a module and among the others is kept
