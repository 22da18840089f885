import os

import numpy as np

from stmil.mil.bags import allocate_npy, make_bag, segment_cuboid_labels


def test_make_bag_means_and_normalises():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 4, 6)).astype(np.float32)
    bag = make_bag(feats)
    assert bag.shape == (32, 4, 6) and bag.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bag, axis=-1), 1.0, rtol=1e-5)
    seg3 = feats[6:8].mean(axis=0)  # 64 clips: segment s = clips [2s, 2s + 2)
    np.testing.assert_allclose(
        bag[3], seg3 / np.linalg.norm(seg3, axis=-1, keepdims=True), rtol=1e-5
    )


def test_make_bag_zero_features_stay_finite():
    bag = make_bag(np.zeros((5, 2, 3), dtype=np.float32), n_segments=4)
    assert np.isfinite(bag).all() and (bag == 0).all()


def test_make_bag_grid1_is_mean_of_cuboids():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 9, 5)).astype(np.float32)
    bag = make_bag(feats, n_segments=8, grid1=True)
    assert bag.shape == (8, 1, 5)
    whole = feats.mean(axis=1, keepdims=True)  # (40, 1, 5): one whole-frame instance per clip
    np.testing.assert_allclose(bag, make_bag(whole, n_segments=8), rtol=1e-5, atol=1e-6)


def test_make_bag_accepts_readonly_float16_memmap(tmp_path):
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(7, 49, 528)).astype(np.float16)
    path = tmp_path / "v.npy"
    np.save(path, feats)
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    bag = make_bag(mm)
    assert bag.shape == (32, 49, 528) and bag.dtype == np.float32
    np.testing.assert_allclose(bag, make_bag(feats.astype(np.float32)), rtol=1e-4, atol=1e-5)


def test_segment_cuboid_labels_hand_case():
    # 2x2 grid over a 100x100 frame: each cuboid is 50x50 = 2500 px, so 25% is 625 px.
    cuboids = np.array([[0, 0, 50, 50], [50, 0, 100, 50], [0, 50, 50, 100], [50, 50, 100, 100]])
    clip_frames = np.array([[0, 16], [16, 32], [32, 48]])
    segments = np.array([[0, 1], [1, 3]])  # segment 0 = clip 0, segment 1 = clips 1 and 2
    gt = {
        5: [[40, 40, 60, 60]],  # 10x10 = 100 px in each cuboid: 4% -> nothing
        10: [[60, 0, 100, 20]],  # 40x20 = 800 px of cuboid 1: 32% -> segment 0, cuboid 1
        20: [[0, 0, 30, 30]],  # 900 px of cuboid 0: 36% -> segment 1, cuboid 0
        40: [[50, 50, 75, 75], [0, 0, 1, 1]],  # exactly 625 px of cuboid 3: 25% counts
        100: [[0, 0, 100, 100]],  # outside every clip: ignored
        12: [],
    }
    labels = segment_cuboid_labels(segments, clip_frames, cuboids, gt)
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, [[0, 1, 0, 0], [1, 0, 0, 1]])
    strict = segment_cuboid_labels(segments, clip_frames, cuboids, gt, overlap=0.3)
    np.testing.assert_array_equal(strict, [[0, 1, 0, 0], [1, 0, 0, 0]])


# --- the bag cache: allocated for real (item 11 of issue 8) -----------------------------------


def test_bag_cache_is_allocated_not_sparse(tmp_path):
    shape = (3, 4, 49, 528)
    arr = allocate_npy(tmp_path / "b.npy", np.dtype(np.float16), shape)
    arr[:] = 1
    arr.flush()
    del arr
    st = os.stat(tmp_path / "b.npy")
    assert st.st_blocks * 512 >= np.prod(shape) * 2  # every block is on disk
    loaded = np.load(tmp_path / "b.npy")
    assert loaded.shape == shape and loaded.dtype == np.float16 and (loaded == 1).all()
