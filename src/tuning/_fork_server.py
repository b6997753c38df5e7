"""Imported first by the workers' fork server (runner._worker_context's preload list), before
torch, MLflow and scikit-learn: the server runs no code of ours but these imports, so the settings
its imports and the workers it forks (which inherit them) should run under are made here, on
import: mlproject.signals.collect_old_objects_rarely (~1 s of full collections fewer in the server
and in every worker) and reuse_freed_memory (training steps reuse freed memory, not fresh pages)."""
from mlproject.signals import collect_old_objects_rarely, reuse_freed_memory

collect_old_objects_rarely()
reuse_freed_memory()
