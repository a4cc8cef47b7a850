r"""Converts the published FID Inception weights (.pth) to a numpy .npz.

Needs torch (`pip install -e ".[convert]"`); run it once on any machine:

  python -m gen_synth.evaluation.convert_inception \
      --src=pt_inception-2015-12-05-6726825d.pth --dst=inception_fid.npz

The .npz keeps the published tensor names and torch layouts; it is checked
against `inception.published_tensor_shapes()` before it is written, and
`gen_synth` reads it without torch (`config.eval.inception_path`).
"""

from absl import app
from absl import flags
import numpy as np

from gen_synth.evaluation import inception

_SRC = flags.DEFINE_string("src", inception.FID_WEIGHTS_FILENAME,
                           "Published pytorch-fid state dict (.pth).")
_DST = flags.DEFINE_string("dst", "inception_fid.npz", "Output .npz path.")


def convert(src: str, dst: str) -> int:
  """Reads `src` (.pth), checks every tensor, writes `dst`; returns #tensors."""
  state = inception.read_state_dict(src)
  state = inception.check_state_dict(state, source=src)
  inception.state_dict_to_variables(state, source=src)  # every param filled
  np.savez(dst, **state)
  return len(state)


def main(argv):
  del argv
  n = convert(_SRC.value, _DST.value)
  print(f"Wrote {n} tensors to {_DST.value}; set "
        f"--config.eval.inception_path={_DST.value}")


if __name__ == "__main__":
  app.run(main)
