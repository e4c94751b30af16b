"""Instances without an input graph (DIFFormer's image/text setting, docs/protocols.md §1.2).

CIFAR-10 / STL-10 are the authors' SimCLR ResNet-18 embeddings (``<name>/features.pkl``, a
pickled dict of x_train, y_train, x_test, y_test); 20News is the 10-category bag of words
built with scikit-learn. A kNN graph (``knn_k``) can be built for models that use a graph;
DIFFormer runs without one, as in the paper.
"""

from __future__ import annotations

import codecs
import os
import pickle
import shutil
import tarfile

import numpy as np
import torch

from .base import NodeDataset
from .preprocess import prepare_edges, self_loops
from .safe_pickle import check_zlib_pickle, safe_load
from .sources import DataRoot
from .splits import RandomClassSplit

FEATURES_SOURCE = (
    "the authors' Google Drive release of the SimCLR features linked from "
    "github.com/qitianwu/DIFFormer (image and text/README); save it as "
    "{rel}"
)
NEWS_CATEGORIES = [
    "alt.atheism",
    "comp.sys.ibm.pc.hardware",
    "misc.forsale",
    "rec.autos",
    "rec.sport.hockey",
    "sci.crypt",
    "sci.electronics",
    "sci.med",
    "sci.space",
    "talk.politics.guns",
]
NEWS_ARCHIVE = "20news/20news-bydate.tar.gz"
NEWS_CACHE = "20news-bydate_py3.pkz"  # the file sklearn's fetch_20newsgroups looks for
NEWS_SOURCE = "scikit-learn's fetch_20newsgroups download (or 20news/20news-bydate.tar.gz)"


def knn_edges(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetrised k-nearest-neighbour graph (Euclidean, sklearn) with one self-loop per node,
    as the official image/text scripts build it."""
    from sklearn.neighbors import kneighbors_graph

    adj = kneighbors_graph(x.numpy(), n_neighbors=k, include_self=True).tocoo()
    edge_index = torch.as_tensor(np.vstack([adj.row, adj.col]), dtype=torch.long)
    return prepare_edges(edge_index, x.shape[0], undirected=True)


def instance_dataset(name: str, x: torch.Tensor, y: torch.Tensor, opts) -> NodeDataset:
    """L labelled per class / ``valid_num`` / the rest, a new split per run
    (docs/protocols.md §1.2)."""
    k = opts.get("knn_k")
    if k is not None and int(k) < 1:
        raise ValueError(f"dataset.knn_k must be >= 1 or null, got {k}")
    edge_index = self_loops(x.shape[0]) if k is None else knn_edges(x, int(k))
    return NodeDataset(
        name=name,
        x=x,
        y=y,
        edge_index=edge_index,
        num_classes=int(y.max()) + 1,
        has_graph=k is not None,
        splits=RandomClassSplit(
            y,
            opts.labels_per_class,
            opts.valid_num,
            opts.get("test_num"),
            shared=opts.get("shared_split", False),
        ),
    )


def load_digits(name: str, opts, root: DataRoot) -> NodeDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, pixels / 16): the
    no-download default, split as the paper's image protocol."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return instance_dataset(
        name,
        torch.as_tensor(bunch.data, dtype=torch.float) / 16.0,
        torch.as_tensor(bunch.target, dtype=torch.long),
        opts,
    )


def load_simclr_features(name: str, opts, root: DataRoot) -> NodeDataset:
    """``cifar10`` (the first ``max_instances`` = 15,000 rows) or ``stl10`` (all 13,000)."""
    rel = f"{name}/features.pkl"
    path = root.find(rel)
    if path is None:
        raise root.unavailable(name, rel, FEATURES_SOURCE.format(rel=rel))
    data = safe_load(path)  # the authors' pickle, read without running any code in it
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(data)
    if missing:
        raise ValueError(f"{path}: features.pkl lacks {sorted(missing)}")
    x = np.concatenate([np.asarray(data["x_train"]), np.asarray(data["x_test"])])
    y = np.concatenate([np.asarray(data["y_train"]), np.asarray(data["y_test"])]).reshape(-1)
    limit = opts.get("max_instances")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return instance_dataset(
        name, torch.as_tensor(x, dtype=torch.float), torch.as_tensor(y, dtype=torch.long), opts
    )


def _news_cache_from_archive(archive, home) -> None:
    """Build sklearn's 20news cache from the bydate archive without downloading (the same
    steps as sklearn's own download helper)."""
    from sklearn.datasets import load_files

    tmp = home / f"20news_home.tmp{os.getpid()}"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(tmp, filter="data")
    cache = {
        part: load_files(tmp / f"20news-bydate-{part}", encoding="latin1")
        for part in ("train", "test")
    }
    payload = codecs.encode(pickle.dumps(cache), "zlib_codec")
    (home / (NEWS_CACHE + ".tmp")).write_bytes(payload)
    os.replace(home / (NEWS_CACHE + ".tmp"), home / NEWS_CACHE)
    shutil.rmtree(tmp)


def load_20news(name: str, opts, root: DataRoot) -> NodeDataset:
    """10 categories; CountVectorizer(stop_words='english', min_df=0.05) -> TF-IDF
    (smooth_idf=False), dense: 9,607 documents x 236 features."""
    from sklearn.datasets import fetch_20newsgroups
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    home = root.cache_dir / "20news"
    home.mkdir(parents=True, exist_ok=True)
    if (home / NEWS_CACHE).exists():
        check_zlib_pickle(home / NEWS_CACHE)  # sklearn unpickles it fully
    else:
        archive = root.find(NEWS_ARCHIVE)
        if archive is not None:
            _news_cache_from_archive(archive, home)
        elif root.offline:
            raise root.unavailable(name, NEWS_ARCHIVE, NEWS_SOURCE)
    try:
        news = fetch_20newsgroups(data_home=str(home), subset="all", categories=NEWS_CATEGORIES)
    except OSError as err:
        raise root.unavailable(name, NEWS_ARCHIVE, NEWS_SOURCE) from err
    counts = CountVectorizer(stop_words="english", min_df=0.05).fit_transform(news.data)
    features = TfidfTransformer(smooth_idf=False).fit_transform(counts).toarray()
    return instance_dataset(
        name,
        torch.as_tensor(features, dtype=torch.float),
        torch.as_tensor(news.target, dtype=torch.long),
        opts,
    )
