r"""Converts published weights into the files gen_synth loads.

  pip install -e ".[convert]"      # torch, only for reading the .pth
  python -m gen_synth.convert --src=pt_inception-2015-12-05-6726825d.pth \
      --dst=inception_fid.npz

Today this converts the FID Inception-v3 weights of pytorch-fid / StyleGAN
(the 2015 TensorFlow graph) into an .npz whose tensor names and shapes are
checked against the published table (gen_synth.evaluation.inception).
"""

from absl import app

from gen_synth.evaluation import convert_inception

if __name__ == "__main__":
  app.run(convert_inception.main)   # its --src / --dst flags
