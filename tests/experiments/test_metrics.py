"""metrics.jsonl: a half-written last line is dropped, other damage is named."""

import json

import pytest

from experiments import metrics


def _write(path, text):
  path.write_text(text)
  return str(path)


def test_read_jsonl_drops_a_half_written_last_line(tmp_path):
  rows = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
  text = "".join(json.dumps(r) + "\n" for r in rows)
  assert metrics.read_jsonl(_write(tmp_path / "a", text)) == rows
  cut = text + '{"step": 3, "lo'
  assert metrics.read_jsonl(_write(tmp_path / "b", cut)) == rows
  # A complete last row whose newline was not written yet is kept.
  whole = text + json.dumps({"step": 3})
  assert metrics.read_jsonl(_write(tmp_path / "c", whole))[-1] == {"step": 3}


def test_read_jsonl_names_a_damaged_line_in_the_middle(tmp_path):
  path = _write(tmp_path / "m", '{"step": 1}\n{"st\n{"step": 3}\n')
  with pytest.raises(ValueError, match=r"m, line 2: not a JSON row"):
    metrics.read_jsonl(path)


def test_writer_resume_keeps_rows_up_to_the_step_and_drops_a_cut_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "split": '
                  '"train"}\n{"step": 3, "spl')
  writer = metrics.MetricWriter(str(tmp_path), resume_step=2,
                                tensorboard=False)
  writer.write(3, "train", {"loss": float("nan")})
  writer.close()
  assert metrics.read_jsonl(str(path)) == [
      {"step": 1, "split": "train"}, {"step": 2, "split": "train"},
      {"step": 3, "split": "train", "loss": "nan"}]
