"""What a person reads: the compare report and its statistics, study notes and artifacts for
optuna-dashboard, and the population views."""
