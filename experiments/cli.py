"""Command-line plumbing of ``experiments.train`` and ``experiments.sweep``.

What a command prints on stderr when it stops, and its exit code:

* an error the user can cause (a flag or config field that does not exist, a
  bad value, a config file that cannot be loaded, data that is not prepared, a
  workdir that cannot be written or holds another experiment): ONE line
  ``error: ...``, exit code 2;
* Ctrl-C: one line ``interrupted: ...`` naming the checkpoint a rerun of the
  same command resumes from, exit code 130;
* a loss or parameters that become NaN / inf: one line ``error: ...``, exit
  code 1 (the command was valid and the run diverged: a numerical failure,
  not a usage error; the last good checkpoint is kept).

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

# OSErrors that mean "this disk / directory cannot be written".
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                 errno.EPERM)


def _lines(message) -> list:
  return [line.strip() for line in str(message).splitlines() if line.strip()]


def _one_line(message) -> str:
  """A multi-line message as one line: its first and last lines."""
  lines = _lines(message)
  if len(lines) <= 2:
    return " ".join(lines)
  return f"{lines[0]} ... {lines[-1]}"


def _print(kind: str, message) -> None:
  sys.stderr.write(f"{kind}: {_one_line(message)}\n")
  sys.stderr.flush()


def _config_argument(argv: Sequence[str]) -> Optional[str]:
  """The value of ``--config`` in ``argv`` (None when absent)."""
  for i, arg in enumerate(argv):
    m = re.match(r"^--?config(=(.*))?$", arg)
    if m:
      return m.group(2) if m.group(1) else (
          argv[i + 1] if i + 1 < len(argv) else None)
  return None


def _overrides(argv: Sequence[str]) -> list:
  """The field paths of the ``--config.<path>=...`` flags in ``argv``."""
  return [m.group(1) for m in (re.match(r"^--?(?:no)?config\.([^=]+)", a)
                               for a in argv) if m]


def _flag_error(argv: Sequence[str], error: Exception) -> str:
  """One line saying which flag could not be parsed, and why.

  ml_collections raises a bare ``KeyError`` / ``AttributeError`` (or the
  ``IOError`` of a config file it could not load) while it parses
  ``--config.<path>`` overrides; the config is loaded again here to name the
  flag and the closest valid field.
  """
  from experiments import config_validation  # pylint: disable=g-import-not-at-top
  path = _config_argument(argv)
  if path is not None and "config" in flags.FLAGS:
    try:
      config = flags.FLAGS["config"].parser.parse(path)
      config.keys()  # a config file that failed to load raises here
      for override in _overrides(argv):
        config_validation.check_field_path(config, override)
    except config_validation.ConfigError as e:
      return f"--{e}"
    except IOError as e:
      return f"--config={path}: {_lines(e)[-1]}"
    except Exception:  # pylint: disable=broad-except
      pass  # the config file itself fails: absl's message says how
  return _one_line(error)


def parse_flags(argv: Sequence[str]):
  """absl's flag parsing, with a one-line error and exit code 2 on failure."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    _print("error", _flag_error(argv, e))
    sys.exit(2)


def load_config(holder):
  """The parsed ``--config``; a one-line UsageError when it was not loaded."""
  config = holder.value
  if config is None:
    raise app.UsageError(f"--{holder.name} is required, e.g. --{holder.name} "
                         "configs/rotated_mnist.py")
  try:
    config.keys()
  except IOError as e:  # ml_collections defers a missing file to first use
    path = config_flags.get_config_filename(flags.FLAGS[holder.name])
    raise app.UsageError(f"--{holder.name}={path}: {_lines(e)[-1]}") from None
  return config


def check_hparam_overrides(holder, algorithm_names: Sequence[str]) -> None:
  """Refuses ``--config.hparams.<key>`` flags that no run algorithm reads."""
  from experiments import config_validation  # pylint: disable=g-import-not-at-top
  overrides = config_flags.get_override_values(flags.FLAGS[holder.name])
  keys = [k.split(".", 1)[1] for k in overrides if k.startswith("hparams.")]
  config_validation.check_hparams_used(keys, algorithm_names)


def _exit_code(error: Exception) -> Optional[int]:
  """2 for a user error, 1 for a diverged run, None for a bug."""
  from experiments import config_validation  # pylint: disable=g-import-not-at-top
  from experiments import trainer  # pylint: disable=g-import-not-at-top
  if isinstance(error, trainer.NonFiniteLossError):
    return 1
  if isinstance(error, (app.UsageError, config_validation.ConfigError,
                        trainer.WorkdirError, FileNotFoundError, ImportError)):
    return 2
  if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
    return 2
  return None


def _run_main(main: Callable[[Sequence[str]], int], argv) -> int:
  try:
    return main(argv)
  except KeyboardInterrupt as e:
    _print("interrupted", str(e) or "stopped by Ctrl-C")
    return 130
  except Exception as e:  # pylint: disable=broad-except
    code = _exit_code(e)
    if code is None:
      raise
    _print("error", e)
    return code


def run(main: Callable[[Sequence[str]], int]) -> None:
  """``absl.app.run(main)`` with the exit codes and one-line errors above."""
  app.run(lambda argv: sys.exit(_run_main(main, argv)),
          flags_parser=parse_flags)
