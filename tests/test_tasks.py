"""fer_model.tasks: the task table and its lookup."""

from __future__ import annotations

import pytest

from fer_model.errors import ConfigError, FerError
from fer_model.tasks import TASK_NAMES, get_task


def test_get_task_returns_each_task_by_name():
    assert [get_task(name).name for name in TASK_NAMES] == list(TASK_NAMES)


def test_unknown_task_is_a_fer_error_naming_the_valid_tasks():
    # A FerError, so the CLI prints it as one line instead of a traceback.
    with pytest.raises(ConfigError, match=r"^unknown task 'valence'; pass one of emotion, gender, race, age$") as info:
        get_task("valence")
    assert isinstance(info.value, FerError)
