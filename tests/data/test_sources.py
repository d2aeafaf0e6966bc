from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data.sources import open_source, train_source, val_texts


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def docs(spec: str | Path, **kwargs) -> list[str]:
    return list(open_source(str(spec), **kwargs).documents())


def jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


# ---- formats -------------------------------------------------------------------------------------


def test_text_file_is_one_document_and_drops_a_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"\xef\xbb\xbfTo be, or not to be.\n")
    assert docs(path) == ["To be, or not to be.\n"]


def test_jsonl_reads_the_text_field_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "rp.jsonl", '{"text": "one", "meta": {}}\n\n{"text": "two"}\n')
    assert docs(path) == ["one", "two"]
    other = jsonl(tmp_path / "o.jsonl", [{"content": "x"}])
    assert docs(other, text_field="content") == ["x"]


def test_parquet_reads_the_text_column(tmp_path: Path) -> None:
    path = parquet(tmp_path / "p.parquet", pa.table({"id": [1, 2], "text": ["alpha", "beta"]}))
    assert docs(path) == ["alpha", "beta"]


def test_folder_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    write(tmp_path / "b" / "z.txt", "z")
    write(tmp_path / "a.txt", "a")
    jsonl(tmp_path / "b" / "c.jsonl", [{"text": "c1"}, {"text": "c2"}])
    parquet(tmp_path / "d.parquet", pa.table({"text": ["d"]}))
    write(tmp_path / ".cache" / "x.txt", "hidden")
    write(tmp_path / "notes.md", "not data")
    assert docs(tmp_path) == ["a", "c1", "c2", "z", "d"]


def test_several_corpus_sources_are_concatenated_in_order(tmp_path: Path) -> None:
    first, second = write(tmp_path / "1.txt", "first"), write(tmp_path / "2.txt", "second")
    data = DataConfig(corpus=(str(second), str(first)), val_sets=("pydoc",), tokenizer="byte")
    assert list(train_source(data).documents()) == ["second", "first"]


def test_fingerprint_follows_content_not_names(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "same")
    b = write(tmp_path / "b.txt", "same")
    before = open_source(str(a)).fingerprint
    assert before == open_source(str(b)).fingerprint
    write(a, "changed")
    assert open_source(str(a)).fingerprint != before
    # Same bytes read as JSON Lines with another field are other documents.
    j = jsonl(tmp_path / "j.jsonl", [{"text": "x", "body": "y"}])
    assert open_source(str(j)).fingerprint != open_source(str(j), text_field="body").fingerprint


def test_val_texts_returns_each_named_set(tmp_path: Path) -> None:
    held = jsonl(tmp_path / "held.jsonl", [{"text": "doc one"}, {"text": "doc two"}])
    data = DataConfig(corpus=(str(write(tmp_path / "t.txt", "train")),), val_sets=(f"held={held}", "pydoc"))
    texts = val_texts(data)
    assert list(texts) == ["held", "pydoc"]
    assert texts["held"] == "doc one\n\ndoc two"
    assert "The \"assert\" statement" in texts["pydoc"]


# ---- bad input -----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope.txt'} does not exist")):
        docs(tmp_path / "nope.txt")


def test_empty_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no text \\(empty corpus\\)"):
        docs(write(tmp_path / "empty.txt", "\n  \n"))
    (tmp_path / "nothing").mkdir()
    write(tmp_path / "nothing" / "readme.md", "x")
    with pytest.raises(DataError, match="holds no .txt/.jsonl/.parquet/.bin/.npy file"):
        docs(tmp_path / "nothing")


def test_undecodable_text_reports_file_and_byte_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.txt", b"caf" + b"\xe9 au lait")
    with pytest.raises(DataError, match=re.escape(f"{path}: not valid UTF-8 at byte offset 3")):
        docs(path)


def test_undecodable_jsonl_reports_offset_in_the_file(tmp_path: Path) -> None:
    first = b'{"text": "ok"}\n'
    path = write(tmp_path / "bad.jsonl", first + b'{"text": "\xff"}\n')
    offset = len(first) + 10
    with pytest.raises(DataError, match=re.escape(f"{path} (line 2): not valid UTF-8 at byte offset {offset}")):
        docs(path)


def test_jsonl_record_without_text_names_file_and_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "rp.jsonl", [{"text": "a"}, {"text": "b"}, {"raw_content": "c"}])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: record has no 'text' field (fields: ['raw_content'])")):
        docs(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "a"', "not valid JSON"),
        ('["text"]', "expected a JSON object with a 'text' field, got list"),
        ('{"text": null}', "field 'text' is NoneType, not a string"),
    ],
)
def test_jsonl_malformed_records(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "m.jsonl", '{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: {message}")):
        docs(path)


def test_parquet_without_text_column(tmp_path: Path) -> None:
    path = parquet(tmp_path / "p.parquet", pa.table({"content": ["x"], "id": [1]}))
    message = f"{path}: Parquet file has no 'text' column (columns: ['content', 'id'])"
    with pytest.raises(DataError, match=re.escape(message)):
        docs(path)


def test_parquet_bad_column_type_null_row_and_garbage(tmp_path: Path) -> None:
    ints = parquet(tmp_path / "i.parquet", pa.table({"text": [1, 2]}))
    with pytest.raises(DataError, match="column 'text' has type int64, expected string"):
        docs(ints)
    nulls = parquet(tmp_path / "n.parquet", pa.table({"text": ["a", None]}))
    with pytest.raises(DataError, match=re.escape(f"{nulls}: row 1 of column 'text' is null")):
        docs(nulls)
    garbage = write(tmp_path / "g.parquet", b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        docs(garbage)


def test_hugging_face_source_fails_clearly_offline(tmp_path: Path) -> None:
    # A fresh interpreter: the offline switches are read when `datasets` is imported.
    code = (
        "from mhmoe.data.sources import open_source\n"
        "from mhmoe.config.data import DataError\n"
        "try:\n    open_source('hf:wikitext:wikitext-2-raw-v1:validation')\n"
        "except DataError as err:\n    print('DataError:', err)\n"
    )
    env = {"MHMOE_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "DataError: data source 'hf:wikitext:wikitext-2-raw-v1:validation': could not load" in out.stdout, out.stderr
    assert (tmp_path / "huggingface" / "datasets").is_dir()  # caches stay in the mhmoe home
