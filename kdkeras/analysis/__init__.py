"""Instruments that show why KD works, for finished (or running) runs.

- :mod:`kdkeras.analysis.runs`: open a run folder (config, model, data).
- :mod:`kdkeras.analysis.embeddings`: penultimate-layer embeddings,
  TensorBoard projector files, PCA / t-SNE scatters (paper Figure 2).
- :mod:`kdkeras.analysis.landscape`: filter-normalised loss surfaces and the
  path from initial to final weights (Li et al., 2018).
- :mod:`kdkeras.analysis.gradients`: per-layer gradient norms during
  training, logged to TensorBoard.
"""
