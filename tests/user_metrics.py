"""A user's own metric, registered from outside the package
(``--extra_modules=user_metrics``), as docs/evaluation.md describes."""

import numpy as np

from gan_jax import metrics

if "feat_mean" not in metrics.METRICS:

  @metrics.register("feat_mean", needs=(metrics.FEATURES,),
                    needs_real=False)
  def feat_mean(real, fake, seed):
    del real, seed
    return {"feat_mean": float(np.mean(fake["features"]))}
