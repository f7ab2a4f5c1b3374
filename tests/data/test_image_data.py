"""Image data sets: local layouts, digits, checks, the held-out-class split and the batcher (all offline, small)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from textebm.data.images import ImageBatcher, ImageDataError, ImageSet, held_out_class_split, load_images


def _png(path: Path, value, size=4, mode="L"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


@pytest.fixture
def split_dir(tmp_path):
    """train/ and test/ with class folders 'cat' (pixels 0) and 'dog' (pixels 255); no valid/."""
    root = tmp_path / "pets"
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            _png(root / split / "cat" / f"{i}.png", 0)
            _png(root / split / "dog" / f"{i}.png", 255)
    return root


def test_split_folders_with_classes(split_dir):
    s = load_images(str(split_dir), image_size=4, channels=1, valid_fraction=0.1)
    assert isinstance(s, ImageSet) and s.channels == 1 and s.image_size == 4
    assert s.train.dtype == torch.float32 and s.train.shape[1:] == (1, 4, 4)
    assert len(s.train) + len(s.valid) == 20 and len(s.valid) == 2 and len(s.test) == 6
    assert s.stats["classes"] == ["cat", "dog"] and s.stats["valid_carved"] == 1
    for split in ("train", "valid", "test"):
        x, y = s.split(split), s.labels(split)
        assert y.dtype == torch.int64 and len(y) == len(x)
        # cat (label 0) images are all 0 -> -1, dog (label 1) all 255 -> +1, exactly
        assert torch.equal(x[y == 0], torch.full_like(x[y == 0], -1.0))
        assert torch.equal(x[y == 1], torch.full_like(x[y == 1], 1.0))
    assert torch.equal(s.split("validation"), s.valid)
    # same seed, same split
    again = load_images(str(split_dir), image_size=4, channels=1, valid_fraction=0.1)
    assert torch.equal(again.valid_labels, s.valid_labels) and torch.equal(again.train, s.train)


def test_resize_and_rgb_conversion(split_dir):
    s = load_images(str(split_dir), image_size=2, channels=3)
    assert s.train.shape[1:] == (3, 2, 2) and s.stats["resized"] > 0
    assert s.train.min() >= -1 and s.train.max() <= 1


def test_flat_folder_split_and_limit(tmp_path):
    root = tmp_path / "flat"
    for i in range(40):
        _png(root / f"{i:02d}.png", [0, 51, 255][i % 3], mode="RGB")
    s = load_images(str(root), image_size=4, channels=3)
    assert (len(s.train), len(s.valid), len(s.test)) == (36, 2, 2)
    assert s.train_labels is None and s.stats["layout"] == "flat folder"
    assert torch.isclose(torch.unique(s.train), torch.tensor([-1.0, 51 / 127.5 - 1, 1.0])).all()
    t = load_images(str(root), image_size=4, channels=3)
    assert torch.equal(s.test, t.test)
    lim = load_images(str(root), image_size=4, channels=3, limit=5)
    assert (len(lim.train), len(lim.valid), len(lim.test)) == (5, 2, 2) and lim.stats["limit"] == 5
    lim2 = load_images(str(root), image_size=4, channels=3, limit=5)
    assert torch.equal(lim.train, lim2.train)


def test_data_dir_name_lookup(tmp_path, split_dir):
    s = load_images("pets", image_size=4, channels=1, data_dir=tmp_path)
    assert s.name == "pets" and len(s.test) == 6


def test_npz_uint8_nhwc_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(30, 5, 5, 3), dtype=np.uint8)
    x_train[0] = 0
    x_train[1] = 255
    x_test = rng.integers(0, 256, size=(8, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=np.arange(30) % 3, x_test=x_test,
             y_test=np.arange(8) % 3)
    s = load_images(str(tmp_path / "d.npz"), image_size=5, channels=3, valid_fraction=0.1)
    s1 = load_images(str(tmp_path / "d.npz"), image_size=5, channels=3, valid_fraction=0.1, seed=1)
    assert torch.equal(load_images(str(tmp_path / "d.npz"), 5, 3, valid_fraction=0.1).valid, s.valid)
    assert not torch.equal(s1.valid, s.valid)  # another seed, another carve
    assert len(s.train) + len(s.valid) == 30 and len(s.test) == 8 and s.train.shape[1:] == (3, 5, 5)
    full = torch.cat([s.train, s.valid])
    assert (full == -1).flatten(1).all(1).any() and (full == 1).flatten(1).all(1).any()
    expect = torch.from_numpy(x_test).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(s.test, expect) and torch.equal(s.test_labels, torch.arange(8) % 3)
    # float [0, 1] (N, C, H, W) in an x/y npz, and a plain .npy
    xf = rng.random((20, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=xf)
    f = load_images(str(tmp_path / "f.npz"), image_size=6, channels=1)
    assert len(f.train) + len(f.valid) + len(f.test) == 20 and f.train_labels is None
    assert f.train.min() >= -1 and f.train.max() <= 1
    np.save(tmp_path / "a.npy", np.zeros((20, 6, 6), dtype=np.uint8))
    a = load_images(str(tmp_path / "a.npy"), image_size=6, channels=1)
    assert a.train.shape[1:] == (1, 6, 6) and torch.equal(a.train, torch.full_like(a.train, -1.0))


def test_digits_offline():
    s = load_images("digits", image_size=8, channels=1)
    assert len(s.train) + len(s.valid) + len(s.test) == 1797
    assert sorted(torch.unique(torch.cat([s.train_labels, s.valid_labels, s.test_labels])).tolist()) == list(range(10))
    assert s.train.min() >= -1 and s.train.max() <= 1 and s.train.min() == -1
    assert set(torch.unique(s.test_labels).tolist()) == set(range(10))  # stratified
    s16 = load_images("digits", image_size=16, channels=1, limit=50)
    assert s16.train.shape == (50, 1, 16, 16)
    assert torch.equal(load_images("digits", 8, 1).test, s.test)


def test_held_out_class_split():
    s = load_images("digits", image_size=8, channels=1)
    h = held_out_class_split(s, 3)
    assert not (h.train_labels == 3).any() and not (h.valid_labels == 3).any()
    assert len(h.train) == int((s.train_labels != 3).sum())
    assert torch.equal(h.test, s.test) and torch.equal(h.test_labels, (s.test_labels == 3).long())
    assert set(h.test_labels.tolist()) == {0, 1}
    with pytest.raises(ImageDataError, match="absent"):
        held_out_class_split(s, 11)
    nolab = ImageSet("x", s.train, s.valid, s.test)
    with pytest.raises(ImageDataError, match="labels"):
        held_out_class_split(nolab, 0)


@pytest.mark.parametrize("arr,match", [
    (np.zeros((10, 7, 7), dtype=np.uint8), r"7x7.*data\.image_size"),
    (np.zeros((10, 6, 6, 3), dtype=np.uint8), r"3 channel.*data\.channels"),
    (np.full((10, 6, 6), np.nan, dtype=np.float32), "NaN"),
    (np.full((10, 6, 6), 200.0, dtype=np.float32), r"\[0, 1\] or \[-1, 1\]"),
])
def test_bad_arrays(tmp_path, arr, match):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(ImageDataError, match=match):
        load_images(str(tmp_path / "bad.npy"), image_size=6, channels=1)


def test_label_length_mismatch(tmp_path):
    np.savez(tmp_path / "m.npz", x=np.zeros((10, 6, 6), dtype=np.uint8), y=np.zeros(9))
    with pytest.raises(ImageDataError, match="9 labels for 10 images"):
        load_images(str(tmp_path / "m.npz"), image_size=6, channels=1)


def test_missing_empty_unreadable(tmp_path):
    with pytest.raises(ImageDataError, match="not found"):
        load_images(str(tmp_path / "nope"), image_size=4, channels=1, source="local")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageDataError, match="zero image"):
        load_images(str(tmp_path / "empty"), image_size=4, channels=1)
    bad = tmp_path / "broken"
    for i in range(5):
        _png(bad / f"{i}.png", 10)
    (bad / "3.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageDataError, match=r"3\.png"):
        load_images(str(bad), image_size=4, channels=1)


def test_offline_hub_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TEXTEBM_DATA", str(tmp_path))  # no local svhn anywhere
    with pytest.raises(ImageDataError) as e:
        load_images("svhn", image_size=32, channels=3)
    msg = str(e.value)
    assert "ufldl-stanford/svhn" in msg and "local folder" in msg and "offline" in msg


def test_batcher_epoch_coverage_and_resume():
    x = torch.arange(23, dtype=torch.float32).view(23, 1, 1, 1)
    b = ImageBatcher(x, batch_size=5, drop_last=False, seed=1)
    assert len(b) == 5
    epoch0 = torch.cat([b.next() for _ in range(len(b))]).flatten()
    assert sorted(epoch0.tolist()) == list(range(23))  # every image exactly once
    epoch1 = torch.cat([b.next() for _ in range(len(b))]).flatten()
    assert sorted(epoch1.tolist()) == list(range(23)) and not torch.equal(epoch0, epoch1)  # reshuffled
    # __iter__: one full pass over the current epoch, repeatable, leaves the stream alone
    state = b.state_dict()
    passes = [torch.cat(list(b)).flatten() for _ in range(2)]
    assert torch.equal(passes[0], passes[1]) and sorted(passes[0].tolist()) == list(range(23))
    assert b.state_dict() == state

    b = ImageBatcher(x, batch_size=5, seed=3)  # drop_last: 4 batches of 5 per epoch
    for _ in range(6):  # into the second epoch
        b.next()
    state, expect = b.state_dict(), [b.next() for _ in range(4)]  # crosses the epoch boundary
    r = ImageBatcher(x, batch_size=5, seed=3)
    r.load_state_dict(state)
    assert all(torch.equal(r.next(), e) for e in expect)


def test_batcher_shards_are_disjoint():
    x = torch.arange(20, dtype=torch.float32).view(20, 1, 1, 1)
    shards = [torch.cat(list(ImageBatcher(x, 3, seed=0, rank=r, world_size=2))).flatten().tolist() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 9 and not set(shards[0]) & set(shards[1])


def test_hub_decoding_with_a_fake_hub(monkeypatch):
    """The Hub path without the network: load_dataset is replaced by an in-memory DatasetDict."""
    import datasets
    from PIL import Image

    def fake(name, config=None):
        assert name == "flwrlabs/celeba" and config is None
        imgs = []
        for i in range(12):
            a = np.zeros((218, 178, 3), dtype=np.uint8)  # CelebA size; the centre 140x140 is white
            a[39:179, 19:159] = 255
            imgs.append(Image.fromarray(a))
        feat = datasets.Features({"image": datasets.Image()})
        ds = datasets.Dataset.from_dict({"image": imgs}, features=feat)
        return datasets.DatasetDict({"train": ds, "test": ds.select(range(4))})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    s = load_images("celeba", image_size=8, channels=3, valid_fraction=0.25, limit=6)
    assert s.stats["source"] == "hub" and s.stats["valid_carved"] == 1 and s.train_labels is None
    assert (len(s.train), len(s.valid), len(s.test)) == (6, 3, 4)
    assert torch.equal(s.train, torch.ones_like(s.train))  # cropped to the white centre, then resized
