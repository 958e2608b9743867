"""Results table against hand-computed numbers (DomainBed's format_mean)."""

from experiments import tables


def test_table_single_seed_and_seeds(tmp_path):
  accs = {
      "erm": {"a": [0.9], "b": [0.7]},
      "sam": {"a": [1.0, 0.8], "b": [0.5, 0.7]},
      "irm": {"a": [0.6], "b": []},
  }
  table = tables.results_table(accs, ["a", "b"], "title")
  md = table["markdown"].splitlines()
  assert md[0] == "| algorithm | a | b | avg | seeds |"
  assert md[2] == "| erm | 90.0 | 70.0 | 80.0 | 1 |"
  # sam: a = 100, 80 -> 90, std 10, standard error 10 / sqrt(2) = 7.07;
  # b = 50, 70 -> 60 ± 7.1; avg: the mean of the cells, 75.
  assert md[3] == "| sam | 90.0 ± 7.1 | 60.0 ± 7.1 | 75.0 | 2 |"
  # A missing cell: X, and no average.
  assert md[4] == "| irm | 60.0 | X | X | 1 |"
  tables.write_table(table, str(tmp_path), "t")
  csv = (tmp_path / "t.csv").read_text().splitlines()
  assert csv[1] == "erm,90.0000,70.0000,80.0000,1"
  assert (tmp_path / "t.md").read_text().startswith("| algorithm")
