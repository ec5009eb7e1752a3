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
