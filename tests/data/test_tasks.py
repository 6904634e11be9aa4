"""Task readers on a few rows of each GLUE file in its distributed layout, plus generic CSV/TSV/JSONL tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from minimoe.data import TASKS, Example, custom_task, get_task, load_hf_task, load_task
from minimoe.data.tasks import custom_task_name, read_labels, read_texts
from minimoe.errors import MiniMoEError

MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER.replace("label1", "label1\tlabel2\tlabel3\tlabel4\tlabel5")

# Each sample: file name -> content, and the examples expected from it. One row per task holds a stray quote.
GLUE_SAMPLES: dict[str, tuple[str, str, list[Example]]] = {
    "cola": (
        "train.tsv",
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
        "gj04\t0\t*\tThey drank the pub.\n"
        'cj99\t1\t\tThe more "you eat, the less you want.\n',
        [
            Example(("Our friends won't buy this analysis, let alone the next one we propose.",), 1),
            Example(("They drank the pub.",), 0),
            Example(('The more "you eat, the less you want.',), 1),
        ],
    ),
    "sst2": (
        "dev.tsv",
        "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
        '" unflinchingly bleak and desperate \t0\n',
        [
            Example(("it 's a charming and often affecting journey . ",), 1),
            Example(('" unflinchingly bleak and desperate ',), 0),
        ],
    ),
    "mrpc": (
        "train.tsv",
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " , of deliberately '
        'distorting his evidence .\tReferring to him as only " the witness " , Amrozi accused his brother .\n'
        "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 .\t"
        "Yucaipa bought Dominick 's in 1995 .\n",
        [
            Example(
                (
                    'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his '
                    "evidence .",
                    'Referring to him as only " the witness " , Amrozi accused his brother .',
                ),
                1,
            ),
            Example(
                (
                    "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 .",
                    "Yucaipa bought Dominick 's in 1995 .",
                ),
                0,
            ),
        ],
    ),
    "stsb": (
        "dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\t"
        "A man wearing a hard hat is dancing.\t5.000\n"
        '1\tmain-news\theadlines\t2015\t0001\tnone\tnone\tObama says "no.\tObama refuses.\t3.800\n',
        [
            Example(("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing."), 5.0),
            Example(('Obama says "no.', "Obama refuses."), 3.8),
        ],
    ),
    "qqp": (
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0\n"
        '402555\t536040\t536041\tHow do I control my "emotions?\tHow do you control your emotions?\t1\n',
        [
            Example(("How is the life of a math student?", "Which level of prepration is enough?"), 0),
            Example(('How do I control my "emotions?', "How do you control your emotions?"), 1),
        ],
    ),
    "mnli": (
        "dev_matched.tsv",
        MNLI_DEV_HEADER + "\n"
        "0\t63735\t63735n\tslate\t( ( x ) )\t( y )\t(ROOT (S))\t(ROOT (S))\tThe new rights are nice enough\t"
        "Everyone really likes the newest benefits \tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n"
        '1\t91383\t91383c\tgovernment\t( a )\t( b )\t(ROOT)\t(ROOT)\tThis site includes a "list.\t'
        "The Government Executive articles are not on the site.\tcontradiction\tcontradiction\tcontradiction\t"
        "contradiction\tcontradiction\tcontradiction\n",
        [
            Example(("The new rights are nice enough", "Everyone really likes the newest benefits "), 1),
            Example(('This site includes a "list.', "The Government Executive articles are not on the site."), 2),
        ],
    ),
    "qnli": (
        "dev.tsv",
        "index\tquestion\tsentence\tlabel\n"
        "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution "
        "heralding the Second Republic came into force.\tentailment\n"
        '1\tWhat is the first major "city?\tThe stream flows into the Tel Aviv bay.\tnot_entailment\n',
        [
            Example(
                (
                    "What came into force after the new constitution was herald?",
                    "As of that day, the new constitution heralding the Second Republic came into force.",
                ),
                0,
            ),
            Example(('What is the first major "city?', "The stream flows into the Tel Aviv bay."), 1),
        ],
    ),
    "rte": (
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\t"
        "not_entailment\n"
        '1\tA place of "sorrow.\tPope Benedict XVI is the new leader.\tentailment\n',
        [
            Example(
                ("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq."), 1
            ),
            Example(('A place of "sorrow.', "Pope Benedict XVI is the new leader."), 0),
        ],
    ),
    "wnli": (
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot had a hole.\t1\n"
        "1\tJohn couldn't see the stage with Billy in front of him because he is so \"short.\t"
        "John is so short.\t0\n",
        [
            Example(
                ("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole."),
                1,
            ),
            Example(
                (
                    "John couldn't see the stage with Billy in front of him because he is so \"short.",
                    "John is so short.",
                ),
                0,
            ),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(GLUE_SAMPLES))
def test_glue_reader(tmp_path: Path, name: str):
    filename, content, expected = GLUE_SAMPLES[name]
    (tmp_path / filename).write_text(content, encoding="utf-8")
    split = next(split for split, file in TASKS[name].splits.items() if file == filename)
    assert load_task(name, tmp_path, split) == expected


def test_mnli_train_and_mismatched_files(tmp_path: Path):
    row = "0\t1\t1e\tfiction\t(a)\t(b)\t(A)\t(B)\tA man sleeps.\tA person rests.\t"
    (tmp_path / "train.tsv").write_text(f"{MNLI_TRAIN_HEADER}\n{row}entailment\tentailment\n", encoding="utf-8")
    labels = "\t".join(["neutral"] * 6)  # label1..label5, gold_label
    (tmp_path / "dev_mismatched.tsv").write_text(f"{MNLI_DEV_HEADER}\n{row}{labels}\n", encoding="utf-8")
    assert load_task("mnli", tmp_path, "train") == [Example(("A man sleeps.", "A person rests."), 0)]
    assert load_task("mnli", tmp_path, "dev_mismatched")[0].label == 1


def test_label_ids_follow_the_hub_order():
    assert TASKS["mnli"].labels == ("entailment", "neutral", "contradiction")
    assert TASKS["qnli"].labels == ("entailment", "not_entailment")
    assert TASKS["stsb"].labels is None and TASKS["stsb"].num_labels == 1
    assert get_task("snli").num_labels == 3


def test_missing_file_names_path_and_split(tmp_path: Path):
    with pytest.raises(MiniMoEError, match=rf"{tmp_path / 'dev.tsv'}: file not found \(task 'rte', split 'dev'\)"):
        load_task("rte", tmp_path, "dev")


def test_malformed_row_names_file_and_line(tmp_path: Path):
    path = tmp_path / "train.tsv"
    path.write_text(
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tA?\tB?\t0\n2\t3\t4\tWhy is\n"
        "the sky blue?\tWhy blue?\t1\n",
        encoding="utf-8",
    )
    with pytest.raises(MiniMoEError, match=rf"{path}:3: expected 6 columns .*found 4"):
        load_task("qqp", tmp_path)
    assert load_task("qqp", tmp_path, skip_bad_rows=True) == [Example(("A?", "B?"), 0)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "sentence\tlabel\ngood film\t2\n",
            r"train.tsv:2: unknown label '2' in column 'label'; expected one of \['0', '1'\]",
        ),
        ("text\tlabel\ngood film\t1\n", r"train.tsv:2: no column 'sentence'; columns are \['text', 'label'\]"),
        ("sentence\tlabel\n", r"train.tsv: no examples"),
        ("", r"train.tsv: no examples"),
    ],
)
def test_bad_content_is_reported(tmp_path: Path, content: str, message: str):
    (tmp_path / "train.tsv").write_text(content, encoding="utf-8")
    with pytest.raises(MiniMoEError, match=message):
        load_task("sst2", tmp_path)


def test_regression_label_must_be_numeric(tmp_path: Path):
    (tmp_path / "train.tsv").write_text(GLUE_SAMPLES["stsb"][1].replace("5.000", "high"), encoding="utf-8")
    with pytest.raises(MiniMoEError, match=r"train.tsv:2: label 'high' in column 'score' is not a number"):
        load_task("stsb", tmp_path)


def test_non_utf8_file_is_reported(tmp_path: Path):
    (tmp_path / "train.tsv").write_bytes("sentence\tlabel\ncliché\t1\n".encode("latin-1"))
    message = r"train.tsv:2: not UTF-8 text \(byte 0xe9 at offset 20: invalid continuation byte\)"
    with pytest.raises(MiniMoEError, match=message):
        load_task("sst2", tmp_path)
    # the label reader of your own files and predict's text reader name it the same way
    with pytest.raises(MiniMoEError, match=message):
        read_labels(custom_task("mine", {"train": tmp_path / "train.tsv"}, ["sentence"], "label"))
    with pytest.raises(MiniMoEError, match=message):
        read_texts(tmp_path / "train.tsv", ["sentence"])


def test_unknown_task_and_split(tmp_path: Path):
    with pytest.raises(MiniMoEError, match="unknown task 'sst-2'; known tasks: cola, sst2"):
        load_task("sst-2", tmp_path)
    with pytest.raises(MiniMoEError, match="task 'sst2' has no split 'test'"):
        load_task("sst2", tmp_path, "test")


def test_custom_tasks_in_every_format(tmp_path: Path):
    (tmp_path / "train.csv").write_text('review,stars\n"Great, really great",pos\nBad,neg\n', encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(
        '{"review": "Fine", "stars": "pos"}\n\n{"review": "Meh", "stars": "neg"}\n', encoding="utf-8"
    )
    (tmp_path / "pairs.tsv").write_text('a\tb\tsim\nx "y\tz\t0.5\n', encoding="utf-8")
    spec = custom_task(
        "reviews",
        {"train": tmp_path / "train.csv", "dev": tmp_path / "dev.jsonl"},
        ["review"],
        "stars",
        labels=["neg", "pos"],
    )
    assert spec.metrics == ("accuracy",)
    assert load_task(spec, "/elsewhere") == [Example(("Great, really great",), 1), Example(("Bad",), 0)]
    assert load_task(spec, "/elsewhere", "dev") == [Example(("Fine",), 1), Example(("Meh",), 0)]
    regression = custom_task("sim", {"train": tmp_path / "pairs.tsv"}, ("a", "b"), "sim")
    assert regression.metrics == ("pearson", "spearman")
    assert load_task(regression, tmp_path) == [Example(('x "y', "z"), 0.5)]


def test_custom_jsonl_bad_line(tmp_path: Path):
    (tmp_path / "train.jsonl").write_text('{"t": "ok", "y": 1}\n[1, 2]\n', encoding="utf-8")
    spec = custom_task("j", {"train": tmp_path / "train.jsonl"}, ["t"], "y", labels=[0, 1])
    with pytest.raises(MiniMoEError, match=r"train.jsonl:2: expected a JSON object, found list"):
        load_task(spec, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_columns": ["a", "b", "c"]}, "needs 1 or 2 text columns"),
        ({"metrics": ["bleu"]}, r"unknown metrics \['bleu'\]"),
        ({"files": {"train": "data.parquet"}}, r"data files must end in .tsv, .csv, .jsonl"),
    ],
)
def test_custom_task_validation(kwargs: dict, message: str):
    arguments = {"name": "x", "files": {"train": "t.csv"}, "text_columns": ["a"], "label_column": "y"} | kwargs
    with pytest.raises(MiniMoEError, match=message):
        custom_task(**arguments)


def test_hub_loader_turns_failures_into_one_clear_error(monkeypatch: pytest.MonkeyPatch):
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        MiniMoEError,
        match=r"could not load GLUE 'mnli' \(validation_matched\) from the Hugging Face "
        r"hub: Couldn't reach .* use load_task\(name, data_dir\)",
    ):
        load_hf_task("mnli", "dev")
    with pytest.raises(MiniMoEError, match="the hub loader serves GLUE tasks"):
        load_hf_task("snli")


def test_labels_are_read_from_the_file(tmp_path: Path):
    (tmp_path / "reviews.csv").write_text("text,sentiment\ngood,positive\nso so,neutral\nbad,negative\nok,neutral\n")
    (tmp_path / "ids.jsonl").write_text('{"t": "a", "y": 10}\n{"t": "b", "y": 2}\n{"t": "c", "y": 2}\n')
    (tmp_path / "sim.tsv").write_text("t\ty\na\t0.5\nb\t3\n")
    spec = custom_task("r", {"train": tmp_path / "reviews.csv"}, ["text"], "sentiment")
    assert read_labels(spec) == ("negative", "neutral", "positive")
    assert read_labels(custom_task("i", {"train": tmp_path / "ids.jsonl"}, ["t"], "y")) == ("2", "10")  # numeric order
    assert read_labels(custom_task("s", {"train": tmp_path / "sim.tsv"}, ["t"], "y")) is None  # fractions: regression
    with pytest.raises(MiniMoEError, match=r"reviews.csv:2: no column 'label'"):
        read_labels(custom_task("r", {"train": tmp_path / "reviews.csv"}, ["text"], "label"))


def test_custom_task_names_never_shadow_registered_tasks(tmp_path: Path):
    assert custom_task_name(tmp_path / "reviews.csv") == "reviews"
    assert custom_task_name(tmp_path / "my-data" / "train.tsv") == "my-data"
    assert custom_task_name(tmp_path / "movie-sentiment.tsv") == "custom-movie-sentiment"
    assert custom_task_name(tmp_path / "snli" / "train.jsonl") == "custom-snli"


def test_packaged_and_glue_tasks_name_their_labels():
    assert get_task("movie-sentiment").names == ("negative", "positive")
    assert get_task("snli").names == ("entailment", "neutral", "contradiction")
    assert get_task("wnli").names == ("not_entailment", "entailment")
    assert get_task("stsb").names == ("score",)
    assert get_task("movie-sentiment").labels == ("0", "1")  # the cached files keep their 0/1 values
