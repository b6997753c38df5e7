"""Everything Optuna: the search space, objectives and constraints, the study's storage, sampler
and pruner, the trials' loop and the study's summary. The application talks to Optuna through
these names; this package imports the training core and `tracking`, never the application.

    plan = check(train_options, searched, StudyOptions(trials=40))   # bad input: ConfigError, at once
    code = execute(prepare(plan, trainer))                             # the study; its exit code

The names below are imported from their modules on first use (PEP 562): `tune --help` and bad
input need neither Optuna nor torch (seconds)."""
from mlproject.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "goals": ("Constraint", "Objective", "best_set", "parse_constraints", "parse_objectives"),
    "objective": ("Pruned", "StudyFailing", "Trainer", "Worker"),
    "options": ("StudyOptions",),
    "runner": ("EXIT_UNREACHABLE", "Plan", "check", "execute", "plan", "prepare"),
    "space": ("DEFAULTS", "LOG_SCALE", "NOT_SEARCHABLE", "OPTION_TYPES", "SEARCHABLE", "SearchSpace", "flag"),
    "study": ("DEFAULT_STORAGE", "SAMPLERS", "create_storage"),
    "summary": ("CHAMPION",),
})
