"""Joining the embedded model from chunk packages: fake packages made in tmp, plus the real installed 0.5B."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from synth.llm import ModelError, model_files
from synth.llm.model_files import EMBEDDED_MODELS, ModelFile, ensure_model_file, find_parts


def _fake_packages(root: Path, prefix: str, chunks: list[bytes]) -> list[str]:
    """Write importable packages <prefix>_partN/data/partNN.bin like the real chunk wheels; return pip pins."""
    pins = []
    for number, chunk in enumerate(chunks, start=1):
        package = root / f"{prefix}_part{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{number:02d}.bin").write_bytes(chunk)
        pins.append(f"{prefix.replace('_', '-')}-part{number}==0.1.0")
    return pins


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    chunks = [os.urandom(3000), os.urandom(5000), os.urandom(1234)]
    site = tmp_path / "site"
    pins = _fake_packages(site, f"fakemodel_{tmp_path.name[-8:].replace('-', '_')}", chunks)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    spec = ModelFile(name="fake", pip_packages=tuple(pins), size=len(whole),
                     sha256=hashlib.sha256(whole).hexdigest(), extra="embedded-small")
    return spec, whole, site


def test_joins_parts_in_order_and_stamps(fake_model, tmp_path):
    spec, whole, _ = fake_model
    path = ensure_model_file(spec, tmp_path / "models")
    assert path == tmp_path / "models" / "fake.gguf"
    assert path.read_bytes() == whole
    assert (tmp_path / "models" / "fake.gguf.verified").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.endswith(".part")] == []


def test_second_load_trusts_the_stamp_without_rejoining(fake_model, tmp_path, monkeypatch):
    spec, _, _ = fake_model
    path = ensure_model_file(spec, tmp_path / "models")
    before = path.stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("re-hashed or re-joined a verified file")

    monkeypatch.setattr(model_files, "_join", must_not_run)
    monkeypatch.setattr(model_files, "file_sha256", must_not_run)
    assert ensure_model_file(spec, tmp_path / "models") == path
    assert path.stat().st_mtime_ns == before


def test_tampered_cache_file_is_detected_and_rejoined(fake_model, tmp_path):
    spec, whole, _ = fake_model
    path = ensure_model_file(spec, tmp_path / "models")
    path.write_bytes(b"x" * len(whole))  # same size, new mtime: the stamp no longer matches, the hash fails
    assert ensure_model_file(spec, tmp_path / "models").read_bytes() == whole


def test_size_mismatch_is_a_clear_error(fake_model, tmp_path):
    spec, whole, _ = fake_model
    wrong = ModelFile(spec.name, spec.pip_packages, spec.size + 1, spec.sha256, spec.extra)
    with pytest.raises(ModelError, match=f"expected {wrong.size:,}.*pip install 'ds-synth\\[embedded-small\\]'"):
        ensure_model_file(wrong, tmp_path / "models")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["fake.gguf.lock"]


def test_sha_mismatch_is_a_clear_error(fake_model, tmp_path):
    spec, _, _ = fake_model
    wrong = ModelFile(spec.name, spec.pip_packages, spec.size, "0" * 64, spec.extra)
    with pytest.raises(ModelError, match="sha256 of the joined file is [0-9a-f]{64}, expected 0000"):
        ensure_model_file(wrong, tmp_path / "models")
    assert not (tmp_path / "models" / "fake.gguf").exists()


def test_missing_part_names_the_pip_command(fake_model, tmp_path):
    spec, _, site = fake_model
    second = site / spec.import_names[1]
    for f in sorted(second.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    second.rmdir()
    with pytest.raises(ModelError, match=r"1 of 3 chunk packages are not installed.*pip install 'ds-synth\[embedded-small\]'"):
        find_parts(spec)
    with pytest.raises(ModelError, match="not installed"):
        ensure_model_file(spec, tmp_path / "models")


def test_concurrent_callers_join_once(fake_model, tmp_path, monkeypatch):
    spec, whole, _ = fake_model
    joins = []
    real_join = model_files._join

    def counting_join(*args):
        joins.append(1)
        real_join(*args)

    monkeypatch.setattr(model_files, "_join", counting_join)
    results, errors = [], []

    def load():
        try:
            results.append(ensure_model_file(spec, tmp_path / "models"))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(joins) == 1
    assert len(set(results)) == 1 and results[0].read_bytes() == whole


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DS_SYNTH_CACHE", str(tmp_path / "c"))
    assert model_files.cache_dir() == tmp_path / "c" / "models"


def test_real_small_model_joins_to_the_published_sha256(tmp_path):
    spec = EMBEDDED_MODELS["0.5b"]
    path = ensure_model_file(spec, tmp_path)  # join + sha256 check happen inside
    assert path.stat().st_size == 491_400_064
    assert model_files.file_sha256(path) == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def test_real_default_model_parts_are_all_found():
    parts = find_parts(EMBEDDED_MODELS["1.5b"])
    assert len(parts) == 22
    assert sum(p.stat().st_size for p in parts) == 1_117_320_768
