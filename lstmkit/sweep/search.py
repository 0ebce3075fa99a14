"""Optuna proposes the points and decides pruning; nothing of the search is written here.

``grid`` is :class:`optuna.samplers.GridSampler`, ``random`` :class:`~optuna.samplers.RandomSampler`,
``tpe`` :class:`~optuna.samplers.TPESampler`, each seeded by the sweep's ``sampler_seed``.  One
Optuna trial is one point; its value is the mean of the metric over the point's seeds.  Pruning
(``median``: :class:`~optuna.pruners.MedianPruner`, ``hyperband``: :class:`~optuna.pruners.HyperbandPruner`)
runs inside each trial's process: it gets the per-epoch curves of the points finished when it
started and asks Optuna, after each evaluation, whether its own curve is worse.
"""
from __future__ import annotations

from ..config.errors import UnavailableError

__all__ = ["import_optuna", "Search", "should_prune_factory"]


def import_optuna():
    """Optuna, quiet; a clear message naming the extra when it is missing (exit 4)."""
    try:
        import optuna
    except ImportError:
        raise UnavailableError('lstmkit sweep needs Optuna, which is not installed: pip install "lstmkit[sweep]" '
                               '(or pip install "optuna>=3.5")') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distributions(spec) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for p in spec.params:
        if p.kind in ("grid", "choice"):
            out[p.key] = CategoricalDistribution(list(p.values))
        elif p.kind == "int":
            out[p.key] = IntDistribution(int(p.low), int(p.high))
        else:
            out[p.key] = FloatDistribution(float(p.low), float(p.high), log=p.kind == "loguniform")
    return out


def _pruner(optuna, pruner: dict, epochs: int | None):
    name = pruner["name"]
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner["startup_trials"],
                                           n_warmup_steps=pruner["warmup_epochs"])
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, pruner["warmup_epochs"]),
                                              max_resource=epochs or "auto")
    return optuna.pruners.NopPruner()


class Search:
    """The study of one sweep: :meth:`ask` a point, :meth:`tell` its result; ``finished`` rebuilds a resumed one.

    ``finished``: ``[(params, value or None, state)]`` with state ``complete``, ``pruned`` or ``fail``.
    """

    def __init__(self, spec, finished=()):
        optuna = self.optuna = import_optuna()
        self.spec = spec
        self.dists = _distributions(spec)
        if spec.method == "grid":
            space = {p.key: list(p.values) for p in spec.params}
            sampler = optuna.samplers.GridSampler(space, seed=spec.sampler_seed)
        elif spec.method == "tpe":
            sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=min(10, max(2, spec.trials // 3)))
        else:
            sampler = optuna.samplers.RandomSampler(seed=spec.sampler_seed)
        direction = "minimize" if spec.mode == "min" else "maximize"
        self.study = optuna.create_study(direction=direction, sampler=sampler)
        for params, value, state in finished:
            self.add(params, value, state)

    def add(self, params: dict, value, state: str) -> None:
        """Record a point finished earlier (resume)."""
        from optuna.trial import TrialState, create_trial

        st = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(state, TrialState.FAIL)
        self.study.add_trial(create_trial(params=params, distributions=self.dists, state=st,
                                          value=value if st == TrialState.COMPLETE else None))

    def ask(self, params: dict | None = None):
        """The next point (or ``params`` again, for a point that did not finish): an Optuna trial."""
        if params is not None:
            self.study.enqueue_trial(params, skip_if_exists=False)
        trial = self.study.ask(self.dists)
        return trial

    def tell(self, trial, value, state: str) -> None:
        from optuna.trial import TrialState

        st = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(state, TrialState.FAIL)
        try:
            self.study.tell(trial, value if st == TrialState.COMPLETE else None, state=st)
        except RuntimeError as exc:  # GridSampler stops the study when the grid is done: only inside optimize()
            if "Study.stop" not in str(exc):
                raise


def should_prune_factory(pruner: dict, mode: str, epochs: int | None, history: list[dict]):
    """``should_prune(epoch, value) -> bool`` for one trial, against ``history`` (``[{"value", "curve"}]``,
    the points finished when it started); ``None`` when nothing is pruned."""
    if pruner["name"] == "none":
        return None
    optuna = import_optuna()
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                pruner=_pruner(optuna, pruner, epochs), study_name="lstmkit-sweep")
    dummy = {"_": FloatDistribution(0.0, 1.0)}
    for h in history:
        curve = {int(k): float(v) for k, v in (h.get("curve") or {}).items()}
        study.add_trial(create_trial(params={"_": 0.5}, distributions=dummy, value=h["value"],
                                     intermediate_values=curve, state=TrialState.COMPLETE))
    trial = study.ask(dummy)

    def should_prune(epoch: int, value: float) -> bool:
        trial.report(float(value), int(epoch))
        return trial.should_prune()

    return should_prune
