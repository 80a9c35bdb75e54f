"""The shared line-numbered JSONL reader."""

from luffy.jsonl import iter_jsonl


def test_rows_problems_and_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": \n[1, 2]\n{"b": "x"}\n', encoding="utf-8")
    out = list(iter_jsonl(path))
    assert [line_no for line_no, _, _ in out] == [1, 4, 5, 6]  # blank lines 2 and 3 are skipped
    assert out[0] == (1, {"a": 1}, None)
    assert out[1][1] is None and out[1][2].startswith("not valid JSON (")
    assert out[2] == (5, None, "not a JSON object")
    assert out[3] == (6, {"b": "x"}, None)
