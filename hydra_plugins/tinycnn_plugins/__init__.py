"""tinycnn's Hydra plugins: the `sweeps` config group (sweeps/ folder) and the tinycnn_optuna
sweeper. Hydra finds them by scanning the hydra_plugins namespace package."""
