"""`lmsmith sweep RECIPE --trials N`: a hyperparameter search with Optuna over short training runs.

The recipe's `sweep:` section says what to search and how long each trial trains:

    sweep:
      steps: 300                  # train.steps of each trial (default: the recipe's)
      evals: 6                    # validation passes per trial; a trial can be pruned after each
      space:
        train.lr: {log_uniform: [3.0e-4, 1.0e-2]}
        train.batch_tokens: {choice: [8192, 16384]}
        train.warmup_steps: {int: [0, 100]}
        train.weight_decay: {uniform: [0.0, 0.2]}
        model.dropout: {uniform: [0.0, 0.2]}
        model.n_layer: {int: [2, 6]}

Each trial is one run of the training engine (`lmsmith train`, in a child process) with the
sampled values; its validation losses are reported to Optuna as they are written to the run's
metrics.jsonl, and the median pruner stops a trial whose loss at a step is worse than the median
of earlier trials at that step. The objective is the trial's best validation loss.

    OUT/study.db          the Optuna study (SQLite): run the same command again to continue it;
                          machines that share a database URL (--storage) share one study
    OUT/trials/STUDY/NNNN/  each trial's recipe, training log and run (metrics, best model)
    OUT/results.csv       one row per trial: its values, state, loss, steps, time
    OUT/best.yaml         the recipe with the best trial's values (train.steps as the recipe had it)
    OUT/history.png       the loss of each trial and the best so far
    OUT/importance.png    how much each hyperparameter mattered (fANOVA)
    OUT/curves.png        the validation loss of every trial during training, pruned ones included

`--trials N` is the size of the study: finished, pruned and failed trials count, so a sweep
stopped by Ctrl-C (or by its time budget) continues up to N when run again.

The package, a module for each part:

    (lmsmith.schema.sweep holds the search space, `sweep:`, and each trial's training recipe)
    trials.py   one trial: a child `lmsmith train` whose metrics.jsonl is followed as it grows
    results.py  the results table, results.csv and the best recipe
    plots.py    the PNG plots
    study.py    the Optuna study, the objective and the `lmsmith sweep` stage (`run`)
"""
