"""Nothing found in a data or cache folder runs code; outputs follow the user's umask."""
import codecs
import os
import pickle
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA_DIR, REPO, needs_data, train_py


class Planted:
    """A pickle that would create ``marker`` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_a_planted_pyg_processed_file_is_refused_and_not_run(tmp_path):
    import torch

    cache = tmp_path / "cache"
    processed = cache / "Planetoid/Cora/processed"
    processed.mkdir(parents=True)
    shutil.copytree(DATA_DIR / "Planetoid/Cora/raw", cache / "Planetoid/Cora/raw")
    marker = tmp_path / "executed"
    torch.save(Planted(marker), processed / "data.pt")
    for name in ("pre_transform.pt", "pre_filter.pt"):
        torch.save("", processed / name)
    proc = train_py("dataset=cora", "trainer.runs=1", "trainer.epochs=1",
                    f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}",
                    check=False)
    assert not marker.exists()  # nothing was executed
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        f"error: {processed / 'data.pt'} does not load as weights-only torch data")
    assert proc.stderr.strip().endswith("Delete the processed folder to rebuild it from the "
                                        "raw files")


def test_the_authors_feature_pickle_is_read_without_running_code(tmp_path):
    from difformer.data import DataRoot, load_dataset
    from difformer.data.safe_pickle import UnsafeDataFile
    from omegaconf import OmegaConf

    (tmp_path / "stl10").mkdir()
    good = {"x_train": np.ones((20, 4), np.float32), "y_train": np.arange(20) % 2,
            "x_test": np.zeros((30, 4), np.float32), "y_test": np.arange(30) % 2}
    with open(tmp_path / "stl10/features.pkl", "wb") as f:
        pickle.dump(good, f)
    opts = OmegaConf.create({"name": "stl10", "labels_per_class": 2, "valid_num": 10,
                             "max_instances": None, "knn_k": None})
    root = DataRoot(tmp_path, tmp_path / "cache", offline=True)
    dataset, _ = load_dataset(opts, root)
    assert dataset.num_nodes == 50
    marker = tmp_path / "executed"
    with open(tmp_path / "stl10/features.pkl", "wb") as f:
        pickle.dump({"x_train": Planted(marker)}, f)
    with pytest.raises(UnsafeDataFile, match="is not a plain data pickle .*posix.system is "
                                             "not allowed|nt.system is not allowed"):
        load_dataset(opts, root)
    assert not marker.exists()


def test_a_planted_20news_cache_is_refused(tmp_path):
    from difformer.data.safe_pickle import UnsafeDataFile, check_zlib_pickle

    marker = tmp_path / "executed"
    path = tmp_path / "cache.pkz"
    path.write_bytes(codecs.encode(pickle.dumps({"train": Planted(marker)}), "zlib_codec"))
    with pytest.raises(UnsafeDataFile, match="system is not allowed"):
        check_zlib_pickle(path)
    assert not marker.exists()
    from sklearn.utils import Bunch

    path.write_bytes(codecs.encode(pickle.dumps({"train": Bunch(
        data=["a text"], target=np.array([0]), filenames=np.array(["f"]),
        target_names=["x"], DESCR=None)}), "zlib_codec"))
    check_zlib_pickle(path)  # sklearn's own cache layout passes


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    code = (f"import os; os.umask({umask}); import sys; sys.argv = ['train.py', "
            f"'trainer.runs=1', 'trainer.epochs=1', 'hydra.run.dir={tmp_path}']; "
            "from difformer.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("summary.json", "config.yaml", "checkpoints/run0.pt", "checkpoints/run0_last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
