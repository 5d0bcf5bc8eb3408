"""`lmsmith sweep`: a hyperparameter search with Optuna over short training runs (see study.py)."""
