"""Evaluation metrics: FID/KID (FID Inception-v3) and weight-free SWD."""

from gen_synth.evaluation.evaluator import compute_metrics
from gen_synth.evaluation.evaluator import default_eval_config
from gen_synth.evaluation.evaluator import parse_metric_name
from gen_synth.evaluation.inception import MissingInceptionWeightsError
from gen_synth.evaluation.metrics import frechet_distance
from gen_synth.evaluation.metrics import kernel_inception_distance
from gen_synth.evaluation.swd import sliced_wasserstein_distance
