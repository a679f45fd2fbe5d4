"""The code examples of webdataset's README, run against local shards made here.

Each test follows one README cell as closely as possible: remote URLs become local shards of
the same shape (publaynet-like PNG + JSON pages of 300x300, openimages-like JPEG + JSON,
``big.jpg`` + JSON), ``num_workers=4`` becomes 2 (the test machines have 2 cores), and the
printed outputs become assertions. Where the README code cannot run as printed, the test
says why and asserts what really happens.

cloudwds's own README.md and docs/*.md are run by tests/test_docs.py (every ```python block, on
the demo data).
"""

from __future__ import annotations

import io
import json as jsonlib
import os
import subprocess
from itertools import islice
from random import randrange

import cbor2
import numpy as np
import pytest
import torch
import torch.nn  # noqa: F401 - as in the README's first cell
import torch.utils.data
from conftest import image_array, jpeg_bytes, png_bytes, write_tar
from PIL import Image

import cloudwds as wds

OPENIMAGES_KEYS = [
    "e39871fd9fd74f55",
    "f18b91585c4d3f3e",
    "ede6e66b2fb59aab",
    "ed600d57fcee4f94",
    "ff47e649b23f446d",
    "a0b1c2d3e4f50617",
    "0123456789abcdef",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """All the README's datasets, written once for the module."""
    root = tmp_path_factory.mktemp("readme")
    pages = {}
    for s in range(4):
        members = []
        for i in range(6):
            key = f"page{s}{i:02d}"
            image = image_array(300, 300, seed=10 * s + i)
            annotations = [{"category_id": 1 + (s + i) % 5}] if i != 5 else []
            pages[key] = (image, annotations)
            members.append((f"{key}.png", png_bytes(image)))
            members.append((f"{key}.json", jsonlib.dumps({"annotations": annotations}).encode()))
        write_tar(root / f"publaynet-train-{s:06d}.tar", members)
    big = []
    for s in range(2):
        members = []
        for i in range(4):
            key = f"big{s}{i}"
            members.append((f"{key}.big.jpg", jpeg_bytes(image_array(300, 320, seed=s + i))))
            members.append((f"{key}.json", jsonlib.dumps({"id": key}).encode()))
            big.append(key)
        write_tar(root / f"big-{s:06d}.tar", members)
    members = []
    for i, key in enumerate(OPENIMAGES_KEYS):
        members.append((f"{key}.jpg", jpeg_bytes(image_array(40 + i, 60, seed=i))))
        members.append((f"{key}.json", jsonlib.dumps({"source": "openimages", "i": i}).encode()))
    openimages = write_tar(root / "openimages-train-000000.tar", members)
    return {
        "root": root,
        "url": str(root / "publaynet-train-{000000..000003}.tar"),
        "pages": pages,
        "big_url": str(root / "big-{000000..000001}.tar"),
        "big_keys": big,
        "openimages": openimages,
    }


# -- README cells (module-level, so DataLoader workers can use them) --------------------------


def preprocess(sample):
    image, json = sample
    try:
        label = json["annotations"][0]["category_id"]
    except:  # noqa: E722 - verbatim README
        label = 0
    return 1 - image, label


def get_patches(src):
    for sample in src:
        image, label = sample
        h, w = image.shape[:2]
        for i in range(16):  # noqa: B007 - verbatim README
            y, x = randrange(h - 256), randrange(w - 265)
            patch = image[y : y + 256, x : x + 256]
            yield (patch, label)


def get_patches_chw(src):
    """``get_patches`` for the DataPipeline cell: there, samples are still dicts (to_tuple
    comes after it) and ``torchrgb`` images are C x H x W tensors, so the size is
    ``image.shape[1:]`` and the patch is ``image[:, y:y+256, x:x+256]``."""
    for sample in src:
        image = sample["big.jpg"]
        h, w = image.shape[1:]
        for i in range(16):  # noqa: B007 - verbatim README
            y, x = randrange(h - 256), randrange(w - 265)
            patch = image[:, y : y + 256, x : x + 256]
            yield {**sample, "big.jpg": patch}


def readme_dataset(url):
    dataset = wds.WebDataset(url).shuffle(1000).decode("rgb").to_tuple("png", "json")
    dataset = dataset.map(preprocess)
    return dataset.compose(get_patches).shuffle(10000)


# -- The WebDataset format / WebDataset ----------------------------------------------------------


def test_tar_tf_lists_samples_by_basename(data):
    listing = subprocess.run(
        ["tar", "tf", str(data["root"] / "publaynet-train-000000.tar")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listing[:4] == ["page000.png", "page000.json", "page001.png", "page001.json"]


def test_fluent_dataset_is_an_iterable_dataset(data):
    url = data["url"]
    dataset = wds.WebDataset(url).shuffle(1000).decode("rgb").to_tuple("png", "json")
    assert isinstance(dataset, torch.utils.data.IterableDataset) is True
    for image, json in dataset:  # noqa: B007 - README
        break
    assert image.shape == (300, 300, 3) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    # the image is one of the pages, decoded exactly (PNG is lossless)
    matches = [k for k, (img, ann) in data["pages"].items() if json["annotations"] == ann]
    assert any(np.allclose(image, data["pages"][k][0] / 255.0) for k in matches)


def test_preprocess_map(data):
    url = data["url"]
    dataset = wds.WebDataset(url).shuffle(1000).decode("rgb").to_tuple("png", "json")
    dataset = dataset.map(preprocess)
    labels = {}
    for image, label in dataset:
        assert image.shape == (300, 300, 3)
        # 1 - image: find the page it came from and check the label against its JSON
        pixels = np.rint((1 - image) * 255).astype(np.uint8)
        key = next(k for k, (img, _) in data["pages"].items() if np.array_equal(img, pixels))
        ann = data["pages"][key][1]
        assert label == (ann[0]["category_id"] if ann else 0)
        labels[key] = label
    assert len(labels) == 24
    assert sorted(set(labels.values())) == [0, 1, 2, 3, 4, 5]


def test_compose_get_patches_and_shuffle(data):
    dataset = readme_dataset(data["url"])
    for image, json in dataset:  # noqa: B007 - README
        break
    assert image.shape == (256, 256, 3)
    assert isinstance(json, int)
    assert sum(1 for _ in dataset) == 24 * 16  # 16 patches per page


def test_dataloader(data):
    dataset = readme_dataset(data["url"])
    loader = torch.utils.data.DataLoader(dataset, num_workers=2, batch_size=8)
    batch = next(iter(loader))
    assert (batch[0].shape, batch[1].shape) == (torch.Size([8, 256, 256, 3]), torch.Size([8]))
    assert batch[0].dtype == torch.float32 and batch[1].dtype == torch.int64


def test_webloader_rebatching(data):
    dataset = readme_dataset(data["url"])
    loader = wds.WebLoader(dataset, num_workers=2, batch_size=8)
    loader = loader.unbatched().shuffle(1000).batched(12)
    batch = next(iter(loader))
    assert (batch[0].shape, batch[1].shape) == (torch.Size([12, 256, 256, 3]), torch.Size([12]))


def test_complete_pipeline(data):
    url = data["url"]
    dataset = (
        wds.WebDataset(url).shuffle(1000).decode("rgb").to_tuple("png", "json").map(preprocess)
    )
    dataset = dataset.compose(get_patches)
    dataset = dataset.batched(16)

    loader = wds.WebLoader(dataset, num_workers=2, batch_size=None)
    loader = loader.unbatched().shuffle(1000).batched(12)

    batch = next(iter(loader))
    assert (batch[0].shape, batch[1].shape) == (torch.Size([12, 256, 256, 3]), torch.Size([12]))
    assert sum(len(b[1]) for b in loader) == 24 * 16


# -- Pipeline interface --------------------------------------------------------------------------


def explicit_pipeline(url, patches):
    return wds.DataPipeline(
        wds.SimpleShardList(url),
        # at this point we have an iterator over all the shards
        wds.shuffle(100),
        wds.split_by_worker,
        # at this point, we have an iterator over the shards assigned to each worker
        wds.tarfile_to_samples(),
        wds.shuffle(1000),
        wds.decode("torchrgb"),
        # at this point, we have an list of decompressed training samples from each shard
        patches,  # note that can put iterator->iterator functions into the pipeline directly
        wds.shuffle(10000),
        wds.to_tuple("big.jpg", "json"),
        wds.batched(16),
    )


def test_explicit_pipeline_as_printed_fails_like_webdataset(data):
    # As printed, get_patches unpacks each sample as (image, label), but before to_tuple the
    # samples are dicts: both libraries fail the same way.
    import webdataset

    dataset = explicit_pipeline(data["big_url"], get_patches)
    with pytest.raises(ValueError, match="too many values to unpack"):
        next(iter(dataset))
    reference = webdataset.DataPipeline(
        webdataset.SimpleShardList(data["big_url"]),
        webdataset.tarfile_to_samples(),
        webdataset.decode("torchrgb"),
        get_patches,
    )
    with pytest.raises(ValueError, match="too many values to unpack"):
        next(iter(reference))


def test_explicit_pipeline(data):
    dataset = explicit_pipeline(data["big_url"], get_patches_chw)
    batch = next(iter(dataset))
    # torchrgb gives C x H x W tensors; json values are dicts, collated into a list
    assert batch[0].shape == torch.Size([16, 3, 256, 256])
    assert isinstance(batch[1], list) and len(batch[1]) == 16
    assert {j["id"] for j in batch[1]} <= set(data["big_keys"])
    batches = list(dataset)
    assert [b[0].shape[0] for b in batches] == [16] * 8  # 8 images x 16 patches


# -- Multinode training --------------------------------------------------------------------------


def test_resampled_with_epoch(data):
    url = data["url"]
    dataset = (
        wds.WebDataset(url, resampled=True)
        .shuffle(1000)
        .decode("rgb")
        .to_tuple("png", "json")
        .map(preprocess)
        .with_epoch(10000)
    )
    sample = next(iter(dataset))
    assert sample[0].shape == (300, 300, 3) and isinstance(sample[1], int)
    # an epoch has exactly 10000 samples although the dataset holds 24 (counted undecoded)
    assert sum(1 for _ in wds.WebDataset(url, resampled=True).with_epoch(10000)) == 10000


def test_resampled_shards_pipeline(data):
    dataset = wds.DataPipeline(
        wds.ResampledShards(data["big_url"]),
        # at this point we have an iterator over all the shards
        wds.tarfile_to_samples(),
        wds.shuffle(1000),
        wds.decode("torchrgb"),
        get_patches_chw,  # get_patches adapted to dict samples, see test_explicit_pipeline
        wds.shuffle(10000),
        wds.to_tuple("big.jpg", "json"),
        wds.batched(16),
    ).with_epoch(10000)
    # (the README prints next(iter(loader)) here, the loader of the cell before)
    batch = next(iter(dataset))
    assert batch[0].shape == torch.Size([16, 3, 256, 256]) and len(batch[1]) == 16
    assert dataset.nsamples == 10000


# -- Data decoding -------------------------------------------------------------------------------


def test_custom_decoders(data):
    def my_png_decoder(key, value):
        if not key.endswith(".png"):
            return None
        assert isinstance(value, bytes)
        return np.asarray(Image.open(io.BytesIO(value)))  # imageio.imread in the README

    def my_decoder(value):
        return np.asarray(Image.open(io.BytesIO(value)))

    # As the README writes it: the Decoder applied to the whole dataset (webdataset 1.0.2 itself
    # fails there: its Decoder only decodes single samples).
    url = data["url"]
    for make in (
        lambda ds: wds.Decoder(my_png_decoder, wds.torch_video, wds.torch_audio)(ds),
        lambda ds: wds.Decoder(wds.handle_extension(".png", my_decoder))(ds),
    ):
        dataset = make(wds.WebDataset(url, shardshuffle=False))
        sample = next(iter(dataset))
        assert sample["__key__"] == "page000"
        assert np.array_equal(sample["png"], data["pages"]["page000"][0])
        assert sample["json"] == {"annotations": data["pages"]["page000"][1]}


def test_processor_with_a_sample_decoder(data):
    def my_sample_decoder(sample):
        result = dict(__key__=sample["__key__"])
        for key, value in sample.items():
            if key == "png" or key.endswith(".png"):
                result[key] = np.asarray(Image.open(io.BytesIO(value)))  # imageio in the README
        return result

    dataset = wds.WebDataset(data["url"], shardshuffle=False)
    dataset = wds.Processor(wds.map, my_sample_decoder)(dataset)
    sample = next(iter(dataset))
    assert sorted(sample) == ["__key__", "png"]
    assert np.array_equal(sample["png"], data["pages"]["page000"][0])


# -- CBOR ----------------------------------------------------------------------------------------


def test_cbor_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("test.cbors", "wb") as stream:
        for i in np.linspace(-5.0, 5.0, 1000):
            cbor2.dump((i, str(i)[-5:]), stream)
    with open("test.cbors", "rb") as stream:
        printed = [cbor2.load(stream) for i in range(3)]
    assert printed == [
        [-5.0, "-5.0"],
        [-4.98998998998999, "98999"],
        [-4.97997997997998, "97998"],
    ]
    dataset = wds.DataPipeline(
        wds.SimpleShardList("test.cbors"),
        wds.cbors_to_samples(),
    )
    data = list(iter(dataset))
    assert (len(data), data[0]) == (1000, [-5.0, "-5.0"])


# -- Direct copying of shards ---------------------------------------------------------------------


def test_direct_copy_repr(data):
    path = data["openimages"]
    dataset = wds.DataPipeline(
        wds.SimpleShardList(path),
        wds.tarfile_to_samples(),
    )
    text = repr(next(iter(dataset)))[:200]
    expected = (
        f"{{'__key__': 'e39871fd9fd74f55', '__url__': '{path}', "
        "'jpg': b'\\xff\\xd8\\xff\\xe0\\x00\\x10JFIF\\x00\\x01"
    )
    assert text.startswith(expected)
    import webdataset

    reference = webdataset.DataPipeline(
        webdataset.SimpleShardList(path), webdataset.tarfile_to_samples()
    )
    assert repr(next(iter(reference)))[:200] == text


def test_syntax_for_url_sources():
    a = wds.SimpleShardList("dataset-{000..001}.tar")
    b = wds.SimpleShardList(["dataset-000.tar", "dataset-001.tar"])
    assert a.urls == b.urls == ["dataset-000.tar", "dataset-001.tar"]


# -- Creating a WebDataset ------------------------------------------------------------------------


def open_my_dataset():
    return [(torch.arange(6.0).reshape(2, 3) * i, torch.tensor([i])) for i in range(4)]


def test_tar_writer_pickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = wds.TarWriter("dest.tar")
    dataset = open_my_dataset()
    for index, (input, output) in enumerate(dataset):  # the README forgot enumerate()
        sink.write(
            {
                "__key__": "sample%06d" % index,  # noqa: UP031 - verbatim README
                "input.pyd": input,
                "output.pyd": output,
            }
        )
    sink.close()
    got = list(wds.WebDataset("dest.tar", shardshuffle=False).decode())
    assert [s["__key__"] for s in got] == [f"sample{i:06d}" for i in range(4)]
    for (input, output), s in zip(dataset, got):
        assert torch.equal(s["input.pyd"], input) and torch.equal(s["output.pyd"], output)


def test_tar_writer_jpg_and_cls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    dataset = [
        (image_array(32, 48, seed=i).astype(np.float32) / 255.0, int(rng.integers(10)))
        for i in range(3)
    ]
    sink = wds.TarWriter("dest.tar")
    for index, (input, output) in enumerate(dataset):
        assert input.ndim == 3 and input.shape[2] == 3
        assert input.dtype == np.float32 and np.amin(input) >= 0 and np.amax(input) <= 1
        assert type(output) is int
        sink.write(
            {
                "__key__": "sample%06d" % index,  # noqa: UP031 - verbatim README
                "input.jpg": input,
                "output.cls": output,
            }
        )
    sink.close()
    got = list(wds.WebDataset("dest.tar", shardshuffle=False).decode("rgb"))
    for (input, output), s in zip(dataset, got):
        assert s["input.jpg"].shape == (32, 48, 3)
        assert np.abs(s["input.jpg"] - input).mean() < 0.03  # JPEG is lossy
        assert s["output.cls"] == output


def test_tar_writer_without_encoder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    basenames = ["img0", "img1"]
    for i, basename in enumerate(basenames):
        with open(f"{basename}.png", "wb") as stream:
            stream.write(png_bytes(image_array(10, 12, seed=i)))

    def lookup_cls(basename):
        return int(basename[-1]) + 3

    # As printed, the README stores the int class with encoder=False. Without an encoder a
    # value must already be bytes (webdataset 1.0.2 raises ValueError); cloudwds raises
    # TypeError naming the field, and writes nothing of that sample.
    sink = wds.TarWriter("dest.tar", encoder=False)
    with pytest.raises(TypeError, match="target.cls"):
        with open(f"{basenames[0]}.png", "rb") as stream:
            image = stream.read()
        sink.write({"__key__": basenames[0], "input.png": image, "target.cls": 3})
    # ...so, as the README's text says, cls is given as an integer encoded in ASCII
    for basename in basenames:
        with open(f"{basename}.png", "rb") as stream:
            image = stream.read()
        cls = str(lookup_cls(basename))
        sample = {"__key__": basename, "input.png": image, "target.cls": cls}
        sink.write(sample)
    sink.close()
    got = list(wds.WebDataset("dest.tar", shardshuffle=False).decode("rgb8"))
    assert [(s["__key__"], s["target.cls"]) for s in got] == [("img0", 3), ("img1", 4)]
    assert np.array_equal(got[1]["input.png"], image_array(10, 12, seed=1))


def test_webdataset_rejects_int_without_encoder_too(tmp_path):
    import webdataset

    sink = webdataset.TarWriter(str(tmp_path / "ref.tar"), encoder=False)
    with pytest.raises(ValueError):
        sink.write({"__key__": "x", "input.png": b"png", "target.cls": 3})
    sink.close()


# -- Offline augmentation -------------------------------------------------------------------------


def extract_class(data):
    # mock implementation
    return 0


def preproc(image):
    # transforms.ToTensor() (torchvision is not installed): PIL RGB → float C x H x W in [0, 1]
    image = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    # more preprocessing here
    return image


def augment_wds(input, output, maxcount=999999999):
    src = wds.DataPipeline(
        wds.SimpleShardList(input),
        wds.tarfile_to_samples(),
        wds.decode("pil"),
        wds.to_tuple("__key__", "jpg;png", "json"),
        wds.map_tuple(None, preproc, None),
    )
    with wds.TarWriter(output) as dst:
        for key, image, data in islice(src, 0, maxcount):
            print(key)
            image = image.numpy().transpose(1, 2, 0)
            image -= np.amin(image)
            image /= np.amax(image)
            sample = {"__key__": key, "png": image, "cls": extract_class(data)}
            dst.write(sample)


def test_offline_augmentation(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = data["openimages"]
    url = f"pipe:cat {url} || true"
    augment_wds(url, "_temp.tar", maxcount=5)
    assert capsys.readouterr().out.split() == OPENIMAGES_KEYS[:5]
    listing = subprocess.run(["tar", "tf", "_temp.tar"], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == [
        f"{k}.{e}" for k in OPENIMAGES_KEYS[:5] for e in ("cls", "png")
    ]
    got = list(wds.WebDataset("_temp.tar", shardshuffle=False).decode("rgb8"))
    assert [s["cls"] for s in got] == [0] * 5
    for i, s in enumerate(got):
        assert s["png"].shape == (40 + i, 60, 3)
        assert s["png"].min() == 0 and s["png"].max() == 255  # normalised to the full range
    assert os.listdir(tmp_path) == ["_temp.tar"]
