"""Fixtures shared by the pipeline tests."""
import pytest

from known_answer import known_answer_columns, known_answer_spec
from tfrec_onerec.data.prepared import write_prepared


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny prepared known-answer data set (50 rows per split)."""
    directory = tmp_path_factory.mktemp("data")
    columns = known_answer_columns(50, 0)
    write_prepared(directory, known_answer_spec(), {"train": columns, "valid": columns, "test": columns},
                   {"name": "known-answer"}, progress=False)
    return directory
