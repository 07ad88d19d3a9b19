"""The four tasks, their classes in index order, and the paper's default loss weights.

This is the only place that defines label orders; everything else imports from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fer_model.errors import ConfigError

#: Label value meaning "this sample has no label for this task" (masked out of loss and metrics).
MISSING = -1


@dataclass(frozen=True)
class Task:
    """One classification head."""

    name: str
    classes: tuple[str, ...]
    default_loss_weight: float

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int:
        """Index of a class name; raises KeyError naming the task for an unknown one."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise KeyError(f"unknown {self.name} label {label!r}; expected one of {self.classes}") from None


EMOTION = Task("emotion", ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"), 2.0)
GENDER = Task("gender", ("male", "female", "unsure"), 0.1)
RACE = Task("race", ("caucasian", "african_american", "asian"), 1.5)
AGE = Task("age", ("0-3", "4-19", "20-39", "40-69", "70+"), 4.0)

#: All tasks in head order. Code that iterates heads uses this tuple.
TASKS: tuple[Task, ...] = (EMOTION, GENDER, RACE, AGE)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
TASKS_BY_NAME: dict[str, Task] = {t.name: t for t in TASKS}

#: The paper's loss weights: emotion 2, age 4, race 1.5, gender 0.1.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {t.name: t.default_loss_weight for t in TASKS}

# Lower bounds (inclusive) of the age bins, in AGE.classes order.
_AGE_BIN_STARTS = (0, 4, 20, 40, 70)


def get_task(name: str) -> Task:
    """The task called `name`; raises ConfigError listing the valid names."""
    try:
        return TASKS_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; pass one of {', '.join(TASK_NAMES)}") from None


def age_to_bin(age_years: int) -> int:
    """Index of the age bin (0-3, 4-19, 20-39, 40-69, 70+) for an age in whole years."""
    if age_years < 0:
        raise ConfigError(f"age must be a number of years >= 0, got {age_years!r}")
    bin_index = 0
    for i, start in enumerate(_AGE_BIN_STARTS):
        if age_years >= start:
            bin_index = i
    return bin_index
