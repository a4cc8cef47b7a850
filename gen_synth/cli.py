"""What gen_synth's command lines share: one-line user errors, quiet orbax logs.

A *user error* is a problem the person at the terminal can fix: a missing
--workdir or --config, data that is not prepared, a bad flag value. Every
command (`gen_synth.main`, `generate`, `evaluate`, `summary`,
`prepare_data`) ends those with one line on stderr,

    error: <what is wrong and what to do>

and exit status 2 (`EXIT_USER_ERROR`, as argparse uses for usage errors), so
scripts can tell them from a crash: bugs keep their Python traceback (status
1). Only a small family is turned into that line: `UserError`, absl's flag
errors (`flags.Error`, e.g. `--height=abc` or a missing required flag),
`app.UsageError`, and, inside `user_errors(...)` blocks that wrap validation
code only, the exception types named there (e.g. FileNotFoundError of a
missing run directory). Everything else propagates.

    from gen_synth import cli

    def main(argv):
      cli.no_arguments(argv)
      ...
      raise cli.UserError('--seeds=x: expected e.g. 0-7 or 1,5,9')

    if __name__ == '__main__':
      cli.run(main)
"""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import sys
import tempfile
from typing import Callable, Iterator, Sequence

from absl import app
from absl import flags
from absl import logging

from gen_synth import host_memory
from gen_synth import tracing_gc

EXIT_USER_ERROR = 2

HOST_MEMORY = flags.DEFINE_enum(
    'host_memory', 'auto', list(host_memory.MODES),
    'Host malloc for XLA:CPU: keep freed blocks for reuse (no page faults each '
    'step; gen_synth/host_memory.py), in transparent huge pages where the '
    'kernel gives them on request (the command runs itself again with '
    'GLIBC_TUNABLES=glibc.malloc.hugetlb=1). auto: on the CPU backend only; '
    'keep: always; system: glibc\'s defaults.')


class UserError(Exception):
  """A problem the user can fix; a command prints `error: <message>`, exits 2."""


def one_line(message: object) -> str:
  """The message on one line (a multi-line help text is joined with spaces)."""
  lines = [line.strip() for line in str(message).splitlines() if line.strip()]
  return ' '.join(lines)


def fail(message: object) -> None:
  """Prints `error: <message>` (one line) to stderr and exits with status 2."""
  print(f'error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def user_errors(*types: type[BaseException]) -> Iterator[None]:
  """Re-raises exceptions of `types` from the block as `UserError`.

  Wrap validation code only (reading a config, parsing a flag value), never a
  computation: a ValueError deep inside a model is a bug and must keep its
  traceback.
  """
  try:
    yield
  except UserError:
    raise
  except types as e:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
      text = f'{e.filename}: {e.strerror}'
    raise UserError(text) from e


def no_arguments(argv: Sequence[str]) -> None:
  """UserError for positional arguments (all inputs are --flags)."""
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {list(argv[1:])}: every input is a '
                    '--flag (see --help).')


def _flag_error_text(error: flags.Error) -> str:
  """A flag error on one line; a config file's embedded traceback -> its last line."""
  text = str(error)
  if 'Traceback (most recent call last)' in text:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = text.split('Traceback (most recent call last)')[0]
    text = f'{one_line(head)} {lines[-1]}'
  return text


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with a bad or missing flag as one `error:` line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(_flag_error_text(e))


def config_flag(name: str = 'config'):
  """The value of an ml_collections config-file flag (None when unset).

  config_flags defers a config file that cannot be loaded (missing, unreadable)
  to the first attribute access; this turns it into a UserError now.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  value = flags.FLAGS[name].value
  error_type = getattr(config_flags.config_flags, '_ErrorConfig', ())
  if isinstance(value, error_type):
    try:
      value.lock()
    except OSError as e:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      filename = config_flags.get_config_filename(flags.FLAGS[name])
      raise UserError(f'--{name}={filename} cannot be loaded: {lines[-1]}') from e
  return value


def _drop_orbax_info(record: py_logging.LogRecord) -> bool:
  """Log filter: False for orbax's records below WARNING."""
  # record.levelno is a Python level: compare with py_logging.WARNING (30),
  # not absl's logging.WARNING (-1, a verbosity), which every record passes.
  return (record.levelno >= py_logging.WARNING or
          f'{os.sep}orbax{os.sep}' not in record.pathname)


def quiet_checkpoint_logs() -> None:
  """Keeps orbax's per-save/restore INFO records off the terminal.

  orbax logs every save and restore at INFO in detail through absl; its
  warnings and errors still show. Other modules' INFO records are untouched.
  Idempotent.
  """
  handler = logging.get_absl_handler()
  if _drop_orbax_info not in handler.filters:
    handler.addFilter(_drop_orbax_info)


def run(main: Callable[[list[str]], object]) -> None:
  """`app.run(main)` with one-line user errors (module doc)."""

  def guarded(argv):
    try:
      # Before main: the malloc options steer only threads JAX has yet to start.
      host_memory.configure(HOST_MEMORY.value)
      return main(argv)
    except (UserError, app.UsageError) as e:
      fail(e)

  # First: glibc reads its huge-page tunable only when a process starts.
  host_memory.reexec_with_huge_pages(host_memory.mode_in_argv(sys.argv[1:]))
  tracing_gc.configure()      # tracing allocates millions of short-lived objects
  app.run(guarded, flags_parser=parse_flags)


# --- Pre-flight checks: cheap, before any model is built ----------------------


def _is_remote(path: str) -> bool:
  return '://' in str(path)


def check_writable_dir(path: str, flag: str = '--workdir') -> None:
  """UserError unless `path` is (or can be created as) a writable folder.

  Leaves nothing behind: it creates and removes one empty folder in `path` or
  its nearest existing parent. Remote paths (gs://...) are left to the first
  write.
  """
  if _is_remote(path):
    return
  target = os.path.abspath(path)
  while not os.path.lexists(target):
    target = os.path.dirname(target)
  if not os.path.isdir(target):
    raise UserError(f'{flag}={path}: {target} is not a folder.')
  try:  # A real write: os.access says yes to root even on /proc or read-only mounts.
    os.rmdir(tempfile.mkdtemp(prefix='.gen_synth_write_check_', dir=target))
  except OSError as e:
    raise UserError(f'{flag}={path}: cannot create folders in {target} '
                    f'({e.strerror or e}).') from None


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in a run directory (never creates it)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gen_synth import checkpointing  # pylint: disable=g-import-not-at-top
  path = epath.Path(workdir) / checkpointing.CHECKPOINT_DIR
  if not path.exists():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


def check_run_dir(workdir: str, step: int | None = None):
  """The config of a gen_synth run directory; UserError when it is not one.

  `step`: a checkpoint step that must exist there.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gen_synth import checkpointing  # pylint: disable=g-import-not-at-top
  if not epath.Path(workdir).exists():
    raise UserError(f'--workdir={workdir} does not exist: pass the --workdir '
                    'of a gen_synth.main run (or --config=FILE for a random '
                    'initialisation).')
  with user_errors(FileNotFoundError, NotADirectoryError, ValueError):
    config = checkpointing.read_config(workdir)
  if step is not None:
    steps = checkpoint_steps(workdir)
    if step not in steps:
      raise UserError(f'--step={step}: {workdir} has no checkpoint of that step '
                      f'(it has {steps or "none"}).')
  return config


def check_generator_source(workdir: str | None, config, step: int | None = None):
  """The config a generator would be loaded from (`sampling.load_generator`).

  UserError for a missing / foreign run directory, a missing --step, or no
  --workdir and no --config.
  """
  if workdir is not None:
    return check_run_dir(workdir, step)
  if config is None:
    raise UserError('give a --workdir (a trained run) or a --config (a random '
                    'initialisation), e.g. --config=configs/creps_ffhq.py:tiny.')
  return config


@contextlib.contextmanager
def _absl_verbosity(level: int) -> Iterator[None]:
  old = logging.get_verbosity()
  logging.set_verbosity(level)
  try:
    yield
  finally:
    logging.set_verbosity(old)


@contextlib.contextmanager
def _own_tempdir() -> Iterator[None]:
  """tempfile's default folder is a private one, removed at the end.

  tfds leaves one empty `tmp*tfds` folder in $TMPDIR behind each builder of an
  unprepared dataset (`DatasetInfo.initialize_from_bucket`); a check must not.
  """
  with tempfile.TemporaryDirectory(prefix='gen_synth_check_') as tmp:
    old, tempfile.tempdir = tempfile.tempdir, tmp
    try:
      yield
    finally:
      tempfile.tempdir = old


def check_data(data_config, splits: Sequence[str] = ()) -> int | None:
  """UserError unless the dataset `data_config` names is prepared.

  Cheap: opens the tfds build's metadata, reads no image. `demo_photos` passes
  (it is built on first use). Returns the number of examples of the first of
  `splits` (None for an unbuilt demo or no splits).
  """
  # pylint: disable=g-import-not-at-top
  from gen_synth import data
  if data_config.name == 'demo_photos':
    return None
  with _absl_verbosity(logging.ERROR), _own_tempdir():  # tfds' warning, temp folder
    with user_errors(ValueError):
      builder = data.get_builder(data_config, build_demo=False)
  available = builder.info.splits
  for split in splits:
    if split not in available:
      raise UserError(f'split {split!r} is not in dataset {data_config.name} '
                      f'({builder.builder_config.name}); it has '
                      f'{", ".join(sorted(available))}.')
  return int(available[splits[0]].num_examples) if splits else None


def check_metrics(config, names: Sequence[str]) -> set:
  """The metric kinds ('fid', 'kid', 'swd') of `names`; UserError for an
  unknown name, or FID/KID without the Inception weights file
  (config.eval.inception_path) or with reals of another resolution."""
  # pylint: disable=g-import-not-at-top
  from gen_synth.evaluation import evaluator
  from gen_synth.evaluation import inception
  with user_errors(ValueError):
    kinds = {evaluator.parse_metric_name(n, 1)[0] for n in names
             if n != 'scale_consistency'}
  if kinds & {'fid', 'kid'}:
    path = config.eval.get('inception_path')
    if not path or not os.path.exists(os.path.expanduser(path)):
      raise UserError(inception.missing_weights_message(path))
    if config.data.resolution != config.model.resolution:
      raise UserError(f'real images are {config.data.resolution}px, the '
                      f"generator's {config.model.resolution}px: FID/KID need "
                      'one resolution (config.data.resolution).')
  return kinds
