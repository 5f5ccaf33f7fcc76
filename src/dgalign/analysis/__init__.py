"""Analyses of saved runs: local flatness (`flatness`), 2-D loss / accuracy surfaces through
three weight vectors (`surface`), 2-D embeddings of latent codes and FGMix mixes (`latent`) and
the transferability attack on a head (`transferability`), on models rebuilt from run
directories (`loading`, which finds a run's files through `dgalign.runs`). Each has one
`analyze_*` function that loads, computes and writes its PNG and JSON (`output`); `dgalign
analyze` parses its options and prints what it returns.
"""

from dgalign.analysis.loading import LoadedRun, initial_algorithm, load_run, run_data

__all__ = ["LoadedRun", "initial_algorithm", "load_run", "run_data"]
