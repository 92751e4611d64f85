"""What a search is and how it runs: the study file (config), the objective (genome -> merge ->
evaluate), the samplers, the weight-space (element) form, merge statistics, precision checks and
the worker loop that runs a study (runner)."""
