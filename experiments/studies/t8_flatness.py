"""T8's flatness: the Hessian of T8's dense runs (SGD, SAM, SSAM-F, SSAM-D) at the end.

Analyses T8's finished runs (no retraining: ``workdirs_of``) with T5's settings: the top
Hessian eigenvalue, lambda_1/lambda_5 and Hutchinson's trace of the training loss on 1024
training examples. The SSAM paper (seed 002) reports flatter Hessian spectra for SSAM than SGD.
"""

from experiments.studies import t5_t7_final, t8_sparse_sam

METRICS = {k: t5_t7_final.METRICS[k] for k in ("lambda_1", "lambda_1_over_5", "trace")}


def get_study():
  t8 = t8_sparse_sam.get_study()
  return {
    "name": "t8_flatness",
    "description": (
      "Hessian (1024 training examples) at the final checkpoint of T8's dense SGD, SAM, SSAM-F "
      "and SSAM-D runs."
    ),
    "base_config": t8["base_config"],
    "fixed": t8["fixed"],
    "cells": t8["cells"],
    "seeds": t8["seeds"],
    "group_by": t8["group_by"],
    "metrics": t8["metrics"],
    "workdirs_of": t8["name"],
    "analyze": {
      "args": [
        "--skip",
        "spectrum,landscape,ascent,corrupted,variance",
        "--examples",
        "1024",
        "--no-progress-bar",
      ],
      "steps": ["final"],
      "metrics": METRICS,
    },
  }
