"""Dataset fixtures: synthetic sample data in the real source formats, and it prepared into a dataset.

Both are session-scoped and built once (a few seconds): `sample_data_dir` holds `fer2013.csv` and
`rafdb/` as written by `write_sample_data(n=SAMPLE_N, seed=0)`; `sample_dataset_dir` is the
dataset artifact `prepare_dataset` makes of both, with its rejects (4 malformed CSV rows and one
corrupt RAF-DB image).
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Faces in the shared sample data (half FER2013 CSV, half RAF-DB).
SAMPLE_N = 600
SAMPLE_SEED = 0


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with `fer2013.csv` and `rafdb/` (synthetic faces, all classes of every task)."""
    from fer_model.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("sample_data")
    write_sample_data(out, n=SAMPLE_N, seed=SAMPLE_SEED)
    return out


@pytest.fixture(scope="session")
def sample_dataset_dir(sample_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset artifact prepared from both sample sources (FER2013 CSV and RAF-DB), workers=1."""
    from fer_model.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("sample_dataset") / "dataset"
    return prepare_dataset(
        sources=[f"fer2013-csv:{sample_data_dir / 'fer2013.csv'}", f"rafdb:{sample_data_dir / 'rafdb'}"],
        out_dir=out,
        workers=1,
        seed=SAMPLE_SEED,
    )
