"""Imported first by the workers' fork server (runner._worker_context's preload list), before
torch, MLflow and scikit-learn: the server runs no code of ours but these imports, so the one
setting its imports should run under is made here, on import (mlproject.signals.
collect_old_objects_rarely: ~1 s of full collections fewer in the server, and in every worker it
forks, which inherits it)."""
from mlproject.signals import collect_old_objects_rarely

collect_old_objects_rarely()
